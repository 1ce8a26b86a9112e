import type { Bus, BusLogger } from './bus.ts'
import { createInProcessBus } from './in-process.ts'
import { connectNatsBus } from './nats.ts'

export * from './bus.ts'
export { requestJson, serveJson } from './rpc.ts'
export {
  createInProcessBus,
  createInProcessHub,
  type InProcessBusOptions,
  type InProcessHub,
} from './in-process.ts'
export { connectNatsBus, type NatsBusOptions } from './nats.ts'
export { kvJournalStats, type KvJournalStats } from './kv-journal.ts'
export { filterToSubjects, subjectToTopic, topicToSubject } from './topic.ts'

export interface CreateBusOptions {
  /** NATS server URL(s); without one the bus is in-process (embedded mode). */
  natsUrl?: string | string[]
  prefix: string
  log?: BusLogger
  /** The in-process bus keeps its KV buckets in this folder; unused with NATS. */
  dataDir?: string
  /** The in-process bus's journal record bound (`busJournalMaxRecordBytes`); unused with NATS. */
  journalMaxRecordBytes?: number
  /** JetStream copies of every KV bucket (`busReplicas`); unused in-process. */
  replicas?: number
}

/** The NATS bus when a server is configured, the in-process bus otherwise. */
export async function createBus({
  natsUrl,
  prefix,
  log,
  dataDir,
  journalMaxRecordBytes,
  replicas,
}: CreateBusOptions): Promise<Bus> {
  const opts = log === undefined ? { prefix } : { prefix, log }
  return natsUrl === undefined || natsUrl.length === 0
    ? createInProcessBus({
        ...opts,
        ...(dataDir === undefined ? {} : { dataDir }),
        ...(journalMaxRecordBytes === undefined ? {} : { journalMaxRecordBytes }),
      })
    : connectNatsBus({ ...opts, servers: natsUrl, ...(replicas === undefined ? {} : { replicas }) })
}
