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

/** Subscribe and unsubscribe the difference between the sessions' filters and the wanted ones. */
export async function syncFilters(link: FilterState, fail: (err: Error) => void): Promise<void> {
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
