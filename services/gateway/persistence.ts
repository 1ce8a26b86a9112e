import { BUCKETS } from '../contracts/buckets.ts'
import type { Bus, Subscription } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import { createIncomingStore } from './persistence/incoming.ts'
import { BRIDGE_CLIENT_PREFIX } from '../contracts/links.ts'
import type { Broker } from './persistence/kv.ts'
import {
  createOutgoingQueue,
  DEFAULT_QUEUE_LIST_MS,
  type OutgoingQueueOptions,
} from './persistence/outgoing.ts'
import { DEFAULT_HOLD_MS } from './persistence/held-writes.ts'
import { createRetainedStore, type RetainedLimits } from './persistence/retained.ts'
import { createSubscriptionStore } from './persistence/subscriptions.ts'
import { createWillStore } from './persistence/wills.ts'

export { DEFAULT_QUEUE_LIST_MS }

/**
 * aedes `persistence` over the bus's KV, shared by every gateway on one bus (ARCHITECTURE.md §10,
 * §13). Reads on hot paths come from local caches that KV watches keep current; writes go to
 * KV first. One part per bucket (under the bus prefix), each in persistence/:
 * - `gw_retained`: retained messages, one key per topic (retained.ts).
 * - `gw_subs`: clean=false subscriptions, one key per client (subscriptions.ts).
 * - `gw_outgoing`: queued QoS > 0 messages, one key per message and persistent subscriber
 *   (outgoing.ts).
 * - `gw_wills`: wills, one key per client, claimed by one survivor when a gateway dies (wills.ts).
 * QoS 2 inbound state stays local (incoming.ts).
 */
export interface BusPersistenceOptions {
  bus: Bus
  log: Logger
  /** Queued messages older than this are dropped (MQTT 3.1.1 sessions never expire: aedes#599). */
  queueTtlMs?: number
  /** First deadline for listing a session's queue in KV; doubled on each of 3 retries. */
  queueListMs?: number
  limits?: Partial<StoreLimits>
  /**
   * ms a queue write for a subscriber online here and keeping up waits for its PUBACK; 0 = none.
   * Default: DEFAULT_HOLD_MS (20) on NATS, where a write is a round trip; 0 in process, where it
   * is not and holding only made the publisher wait (README, Held queue writes).
   */
  holdWritesMs?: number | undefined
  /** Counted when a bound refuses something, and what held queue writes became. */
  counters?: PersistenceCounters
}

export interface PersistenceCounters {
  queueFull: number
  retainedRefused: number
  queueDepthsForgotten: number
  queueEraseDeferred: number
  queueEraseDropped: number
  queueWriteRetries: number
  queueWritesHeld: number
  queueWritesSaved: number
  queueWritesHeldWritten: number
  queueHoldsRefused: number
  ackPacesForgotten: number
}

/** What the shared state may hold (README, Bounds); each holds across gateways. */
export interface StoreLimits extends RetainedLimits {
  /** Messages a client's persistent session may have queued. */
  sessionMaxQueued: number
  /** Messages a bridge's local session (`ub-bridge-…`: its backlog while its upstream is down). */
  bridgeMaxQueued: number
}

export const DEFAULT_STORE_LIMITS: StoreLimits = {
  sessionMaxQueued: 10_000,
  bridgeMaxQueued: 1_000_000,
  maxRetainedMessages: 100_000,
  maxRetainedBytes: 256 * 1_048_576, // 256 MiB
}

export const DEFAULT_QUEUE_TTL_MS = 7 * 24 * 3_600_000 // 7 days

export async function createBusPersistence({
  bus,
  log,
  queueTtlMs = DEFAULT_QUEUE_TTL_MS,
  queueListMs = DEFAULT_QUEUE_LIST_MS,
  limits: limitsGiven = {},
  holdWritesMs = bus.kind === 'nats' ? DEFAULT_HOLD_MS : 0,
  counters = {
    queueFull: 0,
    retainedRefused: 0,
    queueDepthsForgotten: 0,
    queueEraseDeferred: 0,
    queueEraseDropped: 0,
    queueWriteRetries: 0,
    queueWritesHeld: 0,
    queueWritesSaved: 0,
    queueWritesHeldWritten: 0,
    queueHoldsRefused: 0,
    ackPacesForgotten: 0,
  },
}: BusPersistenceOptions) {
  const limits: StoreLimits = { ...DEFAULT_STORE_LIMITS, ...limitsGiven }
  const [retainedKv, subsKv, outKv, willsKv] = await Promise.all([
    bus.kv(BUCKETS.gatewayRetained),
    bus.kv(BUCKETS.gatewaySubscriptions),
    bus.kv(BUCKETS.gatewayOutgoing, { ttlMs: queueTtlMs }),
    bus.kv(BUCKETS.gatewayWills),
  ])
  let broker: Broker | undefined
  const watches: Subscription[] = []
  const retained = createRetainedStore({
    kv: retainedKv,
    limits,
    onRefused: () => counters.retainedRefused++,
  })
  const subs = createSubscriptionStore({ kv: subsKv })
  const outgoing = countedOutgoingQueue(
    { kv: outKv, log, queueListMs, holdWritesMs },
    limits,
    counters
  )
  const incoming = createIncomingStore()
  const wills = createWillStore({ kv: willsKv, log, broker: () => broker })

  // The methods are the parts' own functions, not wrappers: aedes calls several of them on every
  // message, and a wrapper would add a call and a promise hop each time.
  return {
    async setup(b: Broker): Promise<void> {
      broker = b
      await Promise.all([retained.load(watches), subs.load(watches)])
    },
    get retainedCount(): number {
      return retained.size
    },
    /** Sessions catching up from their queue right now (persistence/queue-read.ts). */
    get queueDrains(): number {
      return outgoing.drainsActive
    },

    storeRetained: retained.storeRetained,
    createRetainedStreamCombi: retained.createRetainedStreamCombi,
    createRetainedStream: retained.createRetainedStream,

    addSubscriptions: subs.addSubscriptions,
    removeSubscriptions: subs.removeSubscriptions,
    subscriptionsByClient: subs.subscriptionsByClient,
    subscriptionsByTopic: subs.subscriptionsByTopic,
    cleanSubscriptions: subs.cleanSubscriptions,
    countOffline: subs.countOffline,
    getClientList: subs.getClientList,

    outgoingEnqueue: outgoing.outgoingEnqueue,
    outgoingEnqueueCombi: outgoing.outgoingEnqueueCombi,
    outgoingUpdate: outgoing.outgoingUpdate,
    outgoingClearMessageId: outgoing.outgoingClearMessageId,
    outgoingStream: outgoing.outgoingStream,
    stranded: outgoing.stranded,
    sessionBacklog: outgoing.backlog,
    deliveriesInFlight: outgoing.inFlight,
    holdWritesFor: outgoing.setLiveHere,
    expectWrites: outgoing.expectWrites,
    connectionClosed: outgoing.closed,
    queueCatchUp: outgoing.catchUp,

    /** Session expiry (persistence/expiry.ts): seen now, unseen since, and the end of one. */
    touchSession: subs.touch,
    sessionsUnseenSince: subs.unseenSince,
    async endSession(clientId: string): Promise<void> {
      await subs.cleanSubscriptions({ id: clientId })
      await outgoing.purge(clientId)
    },

    incomingStorePacket: incoming.incomingStorePacket,
    incomingGetPacket: incoming.incomingGetPacket,
    incomingDelPacket: incoming.incomingDelPacket,
    cleanIncoming: incoming.cleanIncoming,

    putWill: wills.putWill,
    getWill: wills.getWill,
    delWill: wills.delWill,
    streamWill: wills.streamWill,

    async destroy(): Promise<void> {
      await outgoing.stop()
      await Promise.allSettled(watches.splice(0).map((w) => w.unsubscribe()))
      log.debug('gateway persistence closed')
    },
  }
}

export type BusPersistence = Awaited<ReturnType<typeof createBusPersistence>>

/** The outgoing queue with its bounds per kind of session and its events on the counters. */
function countedOutgoingQueue(
  options: Pick<OutgoingQueueOptions, 'kv' | 'log' | 'queueListMs' | 'holdWritesMs'>,
  limits: StoreLimits,
  counters: PersistenceCounters
) {
  return createOutgoingQueue({
    ...options,
    maxQueued: (clientId) =>
      clientId.startsWith(BRIDGE_CLIENT_PREFIX) ? limits.bridgeMaxQueued : limits.sessionMaxQueued,
    onQueueFull: () => counters.queueFull++,
    onDepthForgotten: () => counters.queueDepthsForgotten++,
    onEraseDeferred: () => counters.queueEraseDeferred++,
    onEraseDropped: () => counters.queueEraseDropped++,
    onQueueWriteRetry: () => counters.queueWriteRetries++,
    onHeld: {
      held: () => counters.queueWritesHeld++,
      dropped: () => counters.queueWritesSaved++,
      written: () => counters.queueWritesHeldWritten++,
      full: () => counters.queueHoldsRefused++,
      paceForgotten: () => counters.ackPacesForgotten++,
    },
  })
}
