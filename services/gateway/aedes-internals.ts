import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Client, PublishPacket } from 'aedes'

// aedes internals we rely on, in one place: the client's socket/request, its will, its parser
// (for the packet-size limit) and the broker's client table and publish.
export interface ClientInternals {
  conn: Duplex & { remoteAddress?: string }
  req?: IncomingMessage
  _will?: { topic: string } | null
  _parser: { _parseLength(): boolean; packet: { length: number }; _emitError(e: Error): void }
}

export type AedesInternals = {
  clients: Record<string, Client>
  connectedClients: number
  publish(packet: PublishPacket, client?: unknown, done?: unknown): void
}
