/**
 * What the gateways tell the file transfer service: a te/ command ended (status successful or
 * failed) and named a file by its `tedgeUrl`, which may now be removed (services/files/upkeep.ts).
 */
export const COMMAND_ENDED_SUBJECT = 'files.command-ended'

export interface CommandEnded {
  topic: string
  tedgeUrl: string
}
