/**
 * The gateway's copy of the downstreams' thin-edge.io mounts (`te.mount.list`, written by the
 * handshake API from each downstream's topology exchange): read from the store every
 * TE_MOUNTS_REFRESH_MS, so a mount declared or withdrawn reaches every gateway within that.
 * A mount that appears after the first read is announced (`onAdded`): its retained messages
 * came before the gateway knew it and are read once (te-mounted.ts).
 */
import type { Logger } from '../../common/log.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { TeMount } from '../../contracts/te-entities.ts'

const TE_MOUNTS_REFRESH_MS = 2_000

export interface MountTable {
  /** The mounts of the downstream with this instance id (none: empty). */
  of(instanceId: string): readonly TeMount[]
  close(): void
}

const EMPTY: readonly TeMount[] = []
const keyOf = (m: TeMount) => `${m.target}\u0000${m.path}`

export function watchTeMounts({
  store,
  everyMs = TE_MOUNTS_REFRESH_MS,
  onAdded,
  log,
}: {
  store: StoreClient
  everyMs?: number
  onAdded: (instanceId: string, mount: TeMount) => void
  log: Logger
}): MountTable {
  let table = new Map<string, readonly TeMount[]>()
  let loaded = false
  let running: Promise<void> | undefined
  const refresh = (): Promise<void> =>
    (running ??= (async () => {
      try {
        const { items } = await store.call('te.mount.list', {})
        const next = new Map(items.map((i) => [i.instanceId, i.mounts] as const))
        if (loaded)
          for (const [id, mounts] of next) {
            const before = new Set((table.get(id) ?? EMPTY).map(keyOf))
            for (const m of mounts) if (!before.has(keyOf(m))) onAdded(id, m)
          }
        table = next
        loaded = true
      } catch (err) {
        log.debug({ err }, 'thin-edge.io mounts not read; the last ones stay')
      } finally {
        running = undefined
      }
    })())
  const timer = setInterval(() => void refresh(), everyMs)
  timer.unref()
  void refresh()
  return {
    of: (instanceId) => table.get(instanceId) ?? EMPTY,
    close: () => clearInterval(timer),
  }
}
