import { Counter, Gauge, type Registry } from 'prom-client'
import type { Logger } from '../../common/log.ts'
import type { BrokenRow } from '../../contracts/store.ts'
import type { StoreClient } from '../../contracts/store-client.ts'

/** What the SSE stream sends as `event: audit` when the periodic check finds new broken rows. */
export interface AuditAlarm {
  status: 'broken'
  /** The lowest broken row found by this check. */
  first: BrokenRow
  /** The rows this check found broken that were not known before (at most 20 shown). */
  rows: BrokenRow[]
  /** Broken rows known now, in all. */
  total: number
}

export interface AuditAlarms {
  subscribe(listener: (alarm: AuditAlarm) => void): () => void
}

export interface AuditWatch extends AuditAlarms {
  /** One check now (new rows, then the next slice of old ones and the heads). */
  checkNow(): Promise<void>
  /** The broken rows known now. */
  broken(): BrokenRow[]
  close(): Promise<void>
}

export interface AuditWatchOptions {
  store: StoreClient
  log: Logger
  metrics: Registry
  /** ms between checks (config `auditCheckMs`); the first runs at start. */
  intervalMs: number
  /** Older rows re-checked per check (config `auditRecheckRows`). */
  recheckRows: number
  /** Rows per store call while catching up. */
  pageRows?: number
}

const MAX_KNOWN = 1_000 // broken rows remembered; a log that broken is one alarm anyway
const SHOWN = 20

/**
 * Tampering is raised without anyone asking (README.md, Audit): at start every row is checked
 * (each against its own hash and its link to the row before, `audit.check`), then each period
 * only rows committed since, plus a rotating slice of `recheckRows` older ones and every
 * machine's head, so an edit of an old row is found within ⌈rows / recheckRows⌉ periods. A
 * newly broken row is logged at error level (naming the first), sets `ub_audit_chain_broken`,
 * and goes to every SSE client as `event: audit`. A row found intact again clears its alarm.
 */
export function startAuditWatch(options: AuditWatchOptions): AuditWatch {
  const { store, log, intervalMs, recheckRows, pageRows = 5_000 } = options
  const m = auditMetrics(options.metrics)
  const listeners = new Set<(alarm: AuditAlarm) => void>()
  const known = new Map<string, BrokenRow>()
  let verifiedUpTo = 0
  let recheckFrom = 0
  let running: Promise<void> | null = null
  let timer: NodeJS.Timeout | undefined
  let closed = false

  const keyOf = (r: BrokenRow) => `${r.machine}:${r.machineId}:${r.seq}:${r.problem}`

  async function checkNewRows(found: BrokenRow[]): Promise<void> {
    for (;;) {
      const res = await store.call('audit.check', { after: verifiedUpTo, limit: pageRows })
      m.verified.inc(res.checked)
      found.push(...res.broken)
      if (res.last !== null) verifiedUpTo = res.last
      if (res.checked < pageRows) return
    }
  }

  /** The next slice of already verified rows, and the heads; what is intact there is cleared. */
  async function recheck(found: BrokenRow[]): Promise<void> {
    const from = recheckFrom
    const res = await store.call('audit.check', {
      after: from,
      upTo: verifiedUpTo,
      limit: Math.max(1, recheckRows),
      heads: true,
    })
    m.verified.inc(res.checked)
    found.push(...res.broken)
    const to = res.last ?? verifiedUpTo
    recheckFrom = res.checked < recheckRows || to >= verifiedUpTo ? 0 : to
    const still = new Set(res.broken.map(keyOf))
    for (const [key, row] of known) {
      const inSlice =
        row.problem === 'head_mismatch' || (row.globalSeq > from && row.globalSeq <= to)
      if (inSlice && !still.has(key)) known.delete(key)
    }
  }

  async function check(): Promise<void> {
    const found: BrokenRow[] = []
    try {
      await checkNewRows(found)
      if (recheckRows > 0 && verifiedUpTo > 0) await recheck(found)
    } catch (err) {
      m.errors.inc()
      log.warn({ err }, 'audit: chain check could not run; retrying next period')
    }
    const fresh = found.filter((r) => !known.has(keyOf(r)))
    for (const r of fresh) if (known.size < MAX_KNOWN) known.set(keyOf(r), r)
    m.broken.set(known.size > 0 ? 1 : 0)
    m.brokenRows.set(known.size)
    if (fresh.length > 0) raise(fresh)
  }

  function raise(fresh: BrokenRow[]): void {
    const rows = [...fresh].sort((a, b) => a.globalSeq - b.globalSeq)
    const first = rows[0]!
    log.error(
      { audit: 'chain_broken', ...first, newlyBroken: rows.length, knownBroken: known.size },
      `audit: the transition hash chain is broken at ${first.machine} ${first.machineId} seq ${first.seq} (${first.problem}): ${first.message}`
    )
    const alarm: AuditAlarm = {
      status: 'broken',
      first,
      rows: rows.slice(0, SHOWN),
      total: known.size,
    }
    for (const listener of listeners) {
      try {
        listener(alarm)
      } catch (err) {
        log.warn({ err }, 'audit alarm listener failed')
      }
    }
  }

  const checkNow = () => (running ??= check().finally(() => (running = null)))
  const tick = () => {
    if (closed) return
    void checkNow().finally(() => {
      if (!closed) timer = setTimeout(tick, intervalMs).unref()
    })
  }
  tick()

  return {
    checkNow,
    broken: () => [...known.values()],
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    async close() {
      closed = true
      clearTimeout(timer)
      await running
    },
  }
}

function auditMetrics(registry: Registry) {
  const get = <T>(name: string) => registry.getSingleMetric(name) as T | undefined
  return {
    broken:
      get<Gauge>('ub_audit_chain_broken') ??
      new Gauge({
        name: 'ub_audit_chain_broken',
        help: '1 while the periodic audit knows a transition row that fails its hash chain',
        registers: [registry],
      }),
    brokenRows:
      get<Gauge>('ub_audit_broken_rows') ??
      new Gauge({
        name: 'ub_audit_broken_rows',
        help: 'Transition rows (and machine heads) the periodic audit knows to be broken',
        registers: [registry],
      }),
    verified:
      get<Counter>('ub_audit_rows_verified_total') ??
      new Counter({
        name: 'ub_audit_rows_verified_total',
        help: 'Transition rows checked against their hash chain (new and re-checked)',
        registers: [registry],
      }),
    errors:
      get<Counter>('ub_audit_check_errors_total') ??
      new Counter({
        name: 'ub_audit_check_errors_total',
        help: 'Periodic chain checks that could not run (store unreachable)',
        registers: [registry],
      }),
  }
}
