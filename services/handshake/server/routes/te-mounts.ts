/**
 * A downstream's thin-edge.io mounts, as its topology exchange declares them (`teMounts`,
 * services/supervisor/te-mounts.ts): well-formed ones, at most TE_MAX_MOUNTS, go to the store,
 * which keeps those inside the request's grants (`te.mount.set`). The store is called when the
 * declaration differs from the last one this replica passed on for that request, or a minute
 * later; what is refused is logged and counted (`ub_te_mounts_refused_total`) once per change.
 */
import { Counter, type Registry } from 'prom-client'
import type { Logger } from '../../../common/log.ts'
import type { StoreClient } from '../../../contracts/store-client.ts'
import { TE_MAX_MOUNTS, TeMountSchema, type TeMount } from '../../../contracts/te-entities.ts'

const REMEMBERED_MAX = 10_000 // requests whose last declaration is remembered; past it, all forgotten
const RESEND_MS = 60_000

const REFUSED = 'ub_te_mounts_refused_total'

export function createMountIntake({
  store,
  log,
  metrics,
}: {
  store: StoreClient
  log: Logger
  metrics?: Registry | undefined
}) {
  const last = new Map<string, { said: string; at: number }>()
  const counted =
    metrics &&
    ((metrics.getSingleMetric(REFUSED) as Counter | undefined) ??
      new Counter({
        name: REFUSED,
        help: "downstreams' thin-edge.io mounts refused: outside the grants, malformed or past 16",
        registers: [metrics],
      }))
  return async function declare(requestId: string, raw: unknown[] | undefined): Promise<void> {
    if (raw === undefined) return // a downstream older than mounts
    const mounts: TeMount[] = []
    const refused: { mount: unknown; reason: string }[] = []
    for (const item of raw) {
      const parsed = TeMountSchema.safeParse(item)
      if (!parsed.success) refused.push({ mount: item, reason: parsed.error.issues[0]!.message })
      else if (mounts.length === TE_MAX_MOUNTS)
        refused.push({ mount: item, reason: `more than ${TE_MAX_MOUNTS} mounts` })
      else mounts.push(parsed.data)
    }
    // Passed on again once a minute at least: another replica may have passed a newer one.
    const said = JSON.stringify(mounts)
    const before = last.get(requestId)
    if (before && before.said === said && Date.now() - before.at < RESEND_MS) return
    const set = await store.call('te.mount.set', { requestId, mounts })
    if (last.size >= REMEMBERED_MAX) last.clear()
    last.set(requestId, { said, at: Date.now() })
    if (set.changed)
      log.info(
        { requestId, mounts: set.mounts.map((m) => m.target), removed: set.removed },
        "a downstream's thin-edge.io mounts changed"
      )
    refused.push(...set.refused)
    if (refused.length === 0 || before?.said === said) return // said once per change
    counted?.inc(refused.length)
    log.warn(
      { requestId, refused },
      'thin-edge.io mounts refused (outside the grants or malformed)'
    )
  }
}
