import type { Bus } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import { localClientId } from '../contracts/links.ts'
import { readSessionBacklog } from '../contracts/session-backlog.ts'
import type { RunningLinks } from './link-runner.ts'

/**
 * The backlog of each running link's local session, read from the gateways (they share the
 * queue, so one answer covers them all): how many messages wait and since when. It is what an
 * operator needs while a link is down or catching up, when the link's own window says nothing.
 * One batched request per interval for all the links of this replica; a failed read keeps the
 * last figures and is counted.
 */
export interface LinkBacklog {
  queued: number
  /** When the oldest unsent message was queued, ms since the epoch; null when none waits. */
  oldestAt: number | null
}

export interface BacklogWatch {
  of(upstreamId: string): LinkBacklog | undefined
  readonly failures: number
  stop(): void
}

export const DEFAULT_BACKLOG_INTERVAL_MS = 5_000

export function startBacklogWatch({
  bus,
  running,
  intervalMs = DEFAULT_BACKLOG_INTERVAL_MS,
  log,
}: {
  bus: Bus
  running: RunningLinks
  intervalMs?: number | undefined
  log: Logger
}): BacklogWatch {
  // Bounded by the running links: entries of links no longer running are dropped at each read.
  const figures = new Map<string, LinkBacklog>()
  let failures = 0
  let inFlight: Promise<void> | undefined

  async function readAll(): Promise<void> {
    const ids = [...running.keys()]
    for (const id of figures.keys()) if (!running.has(id)) figures.delete(id)
    if (ids.length === 0) return
    try {
      const items = await readSessionBacklog(bus, ids.map(localClientId))
      const byClient = new Map(items.map((i) => [i.clientId, i]))
      for (const id of ids) {
        const got = byClient.get(localClientId(id))
        if (got) figures.set(id, { queued: got.queued, oldestAt: got.oldestAt })
      }
    } catch (err) {
      failures++
      log.debug({ err }, 'reading the links’ session backlog failed; keeping the last figures')
    }
  }
  const refresh = () => (inFlight ??= readAll().finally(() => (inFlight = undefined)))
  const timer = setInterval(() => void refresh(), intervalMs)
  timer.unref()
  return {
    of: (id) => figures.get(id),
    get failures() {
      return failures
    },
    stop: () => clearInterval(timer),
  }
}
