import type { Logger } from '../common/log.ts'
import type { MqttSession } from './mqtt-session.ts'
import type { Remapper } from './remap.ts'
import type { UpstreamSession } from './upstream-client.ts'

/** What a link subscribes to on each side, and what it knows it is subscribed to. */
export interface FilterState {
  readonly options: { upstreamId: string; log: Logger }
  remap: Remapper
  /** Off the mesh tree: subscribed to nothing, bindings kept for what was already queued. */
  blocked: boolean
  /** What the local session is subscribed to, as far as this process knows. */
  sessionFilters: string[]
  /** What the upstream session is subscribed to (bindings coming in), likewise. */
  upstreamFilters: string[]
  /** The filter change under way: the next one waits for it (see `serially`). */
  filterChanges: Promise<void>
  local: MqttSession | undefined
  upstream: UpstreamSession | undefined
}

/** `localBrokerUrl` may list several gateways, comma-separated. */
export const localUrls = (list: string): string[] =>
  list
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean)

/** What each side should be subscribed to: nothing while the mesh blocks the link. */
export const wantedFilters = (
  link: FilterState
): { local: readonly string[]; upstream: readonly string[] } =>
  link.blocked
    ? { local: [], upstream: [] }
    : { local: link.remap.filters, upstream: link.remap.upstreamFilters }

/**
 * Filter changes of one link run one at a time. Each diffs against the filters the last one
 * recorded; two at once (a block landing while the connect step subscribes) would each act on
 * a list the other was about to change, and leave the link subscribed where it believes it is not.
 */
export function serially(link: FilterState, change: () => Promise<void>): Promise<void> {
  const next = link.filterChanges.then(change, change)
  link.filterChanges = next.catch(() => {})
  return next
}

/** Subscribe and unsubscribe the difference between the sessions' filters and the wanted ones. */
export function syncFilters(link: FilterState, fail: (err: Error) => void): Promise<void> {
  return serially(link, () => applyWanted(link, fail))
}

async function applyWanted(link: FilterState, fail: (err: Error) => void): Promise<void> {
  const wanted = wantedFilters(link)
  const { local, upstream } = link
  if (!local || !upstream) return // not connected: the next connect subscribes the wanted filters
  try {
    await resubscribe(local, link.sessionFilters, wanted.local)
    link.sessionFilters = [...wanted.local]
    await resubscribe(upstream, link.upstreamFilters, wanted.upstream)
    link.upstreamFilters = [...wanted.upstream]
  } catch (err) {
    link.options.log.warn(
      { upstreamId: link.options.upstreamId, err },
      'binding change failed; reconnecting'
    )
    fail(err as Error)
  }
}

async function resubscribe(
  session: Pick<MqttSession, 'subscribe' | 'unsubscribe'>,
  had: readonly string[],
  wanted: readonly string[]
): Promise<void> {
  await session.subscribe(wanted.filter((f) => !had.includes(f)))
  await session.unsubscribe(had.filter((f) => !wanted.includes(f)))
}
