import { encodeJson, type KvBucket } from '../common/bus/bus.ts'
import type { LinkStatus } from '../contracts/links.ts'
import type { LinkCounters } from './bridge.ts'
import type { LinkBacklog } from './backlog-watch.ts'

const WRITE_EVERY_MS = 1_000 // at most ~1 write per second per link
const HEARTBEAT_MS = 5_000 // unchanged status is rewritten every 5 s so updatedAt shows liveness

export interface LinkStatusWriter {
  /** Write soon (throttled): a state change. */
  touch(): void
  flush(): Promise<void>
  close(): Promise<void>
}

export function createLinkStatusWriter({
  kv,
  upstreamId,
  owner,
  read,
  peer = () => null,
  blocked = () => false,
  backlog = () => undefined,
  onError,
}: {
  kv: KvBucket
  upstreamId: string
  owner: string
  read: () => LinkCounters
  peer?: () => string | null
  /** The mesh spanning tree blocks this link: shown as state `Blocked` while connected. */
  blocked?: () => boolean
  /** The local session's queue as the gateways last counted it (backlog-watch.ts). */
  backlog?: () => LinkBacklog | undefined
  onError: (err: unknown) => void
}): LinkStatusWriter {
  let last = ''
  let lastAt = 0
  let writing: Promise<void> = Promise.resolve()
  let closed = false

  const write = (force: boolean): Promise<void> => {
    const counters = read()
    const { lastError, forwarded, waiting, lagMs, duplicatesDropped } = counters
    const state = counters.state === 'Forwarding' && blocked() ? 'Blocked' : counters.state
    const peerInstanceId = peer()
    const queue = backlog()
    const canary = counters.canary
    const silent = counters.state === 'Forwarding' && (canary?.silent ?? false)
    const key = JSON.stringify([
      silent,
      canary?.lastOkAt,
      queue?.queued,
      queue?.oldestAt,
      state,
      lastError,
      forwarded,
      waiting,
      lagMs,
      peerInstanceId,
      duplicatesDropped,
    ])
    const now = Date.now()
    if (!force && key === last && now - lastAt < HEARTBEAT_MS) return writing
    last = key
    lastAt = now
    const status: LinkStatus = {
      state,
      lastError,
      forwarded,
      waiting,
      lagMs,
      owner,
      updatedAt: new Date(now).toISOString(),
      peerInstanceId,
      duplicatesDropped,
      backlog: queue?.queued ?? null,
      oldestUnsentAt: queue?.oldestAt == null ? null : new Date(queue.oldestAt).toISOString(),
      oldestUnsentMs: queue?.oldestAt == null ? null : Math.max(0, now - queue.oldestAt),
      silent,
      canaryRoundTripMs: canary?.lastRoundTripMs ?? null,
      canaryOkAt: canary?.lastOkAt == null ? null : new Date(canary.lastOkAt).toISOString(),
    }
    writing = writing
      .then(() => kv.put(upstreamId, encodeJson(status)))
      .then(
        () => {},
        (err) => onError(err)
      )
    return writing
  }

  const timer = setInterval(() => void write(false), WRITE_EVERY_MS)
  timer.unref()
  let soon: NodeJS.Timeout | undefined

  return {
    touch() {
      if (closed || soon) return
      // A state change goes out quickly, but never more than once per interval.
      const wait = Math.max(0, lastAt + WRITE_EVERY_MS - Date.now())
      soon = setTimeout(() => {
        soon = undefined
        if (!closed) void write(false)
      }, wait)
    },
    flush: () => write(true),
    async close() {
      if (closed) return
      await write(true)
      closed = true
      clearInterval(timer)
      clearTimeout(soon)
    },
  }
}
