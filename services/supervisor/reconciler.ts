import type { Binding } from '../../machines/index.ts'
import { decodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import { UbError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import { transitionSubject, type TransitionRecord, type Upstream } from '../contracts/store.ts'
import { excessOf, fairShare, type Roster } from './balance.ts'
import type { LinkRunner, RunningLink, RunningLinks } from './link-runner.ts'
import type { LeaseManager } from './ownership.ts'
import { sameBindings } from './remap.ts'

const LIST_EVERY_MS = 10_000 // full reconcile from the store even when no event arrives
/**
 * States in which the bridge's gateway session is purged (README, "Deactivate, revoke, delete"):
 * nothing published while the upstream refuses us may reach it later. A deactivated upstream
 * (Approved) only pauses: its session keeps queuing, within the gateway's per-session bound.
 */
const PURGED = new Set(['Revoked', 'Declined', 'Deleted'])
const EVENT_DEBOUNCE_MS = 20 // a burst of transitions costs one reconcile

/** Why a link stopped, as its lastError says, by the upstream's status. */
const STOP_REASONS: Record<string, string> = {
  Revoked: 'revoked by the upstream server',
  Declined: 'declined by the upstream server',
  Deleted: 'deleted',
  // Only an edit to another server takes an Active upstream back to Pending (README, Edit an upstream).
  Pending: 'moved to another server: waiting for its approval',
}

/**
 * The desired set (Active upstreams from the store, every transition event a hint) against the
 * running links: start what this replica can claim, stop what is no longer Active, owned or
 * reachable, retarget what moved, rebind what changed bindings, forget what was deleted.
 */
export interface Reconciler {
  /** One pass now, or right after the one under way. */
  reconcile(): Promise<void>
  /** No more events or ticks; the passes under way go on (see `drain`). */
  stop(): Promise<void>
  /** Wait for the passes under way and queued. */
  drain(): Promise<void>
}

export interface ReconcilerOptions {
  bus: Bus
  store: StoreClient
  running: RunningLinks
  runner: LinkRunner
  leases: LeaseManager
  /** The supervisor replicas: with it, this one keeps to its fair share (balance.ts). */
  roster?: Roster
  /** A pass at least this often, ms. */
  everyMs: number
  isClosed: () => boolean
  log: Logger
}

export async function startReconciler(options: ReconcilerOptions): Promise<Reconciler> {
  const { bus, store, running, runner, leases, roster, isClosed, log } = options
  /** Upstreams that reached a PURGED state: their session is dropped by the next pass. */
  const deleted = new Set<string>()
  let sweptAtStart = false
  let desired = new Map<string, Upstream>()
  let listedAt = 0
  let dirty = true

  async function refreshDesired(): Promise<void> {
    if (!dirty && Date.now() - listedAt < LIST_EVERY_MS) return
    dirty = false
    try {
      const list = await store.call('upstream.list', { status: 'Active' })
      desired = new Map(list.map((u) => [u.id, u]))
      listedAt = Date.now()
    } catch (err) {
      // Keep forwarding what we forward: an unreachable store says nothing about the links.
      log.warn({ err }, 'could not list Active upstreams; keeping the current links')
    }
  }

  /** The upstream's status now (null when it is gone from the store). */
  async function statusOf(id: string): Promise<string | null> {
    if (deleted.has(id)) return null
    try {
      return (await store.call('upstream.get', { id })).status
    } catch (err) {
      if (err instanceof UbError && err.code === 'not_found') return null
      return 'unknown'
    }
  }

  async function reconcileRunning(): Promise<void> {
    for (const [id, r] of running) {
      const want = desired.get(id)
      if (!want) {
        const status = await statusOf(id)
        const gone = status === null || PURGED.has(status)
        // The link says why it stopped: the operator reads it beside the upstream's status.
        await runner.stop(id, gone ? 'forget' : 'stop', STOP_REASONS[status ?? ''] ?? 'deactivated')
        continue
      }
      // Renewed by the lease renewal on its own timer; a lease it lost (or could not renew in
      // time) already stopped the link, and is cleaned up here.
      if (!leases.holds(id)) {
        await runner.stop(id, 'lost')
        continue
      }
      await update(r, want)
    }
  }

  async function update(r: RunningLink, want: Upstream): Promise<void> {
    if (targetChanged(r.upstream, want)) {
      // Where to connect changed: a new link; the session (and its queue) carries over.
      await r.link.stop('upstream changed')
      await r.status.close()
      runner.start(want)
    } else if (!sameBindings(r.upstream.bindings, want.bindings)) {
      r.upstream = want
      await r.link.setBindings(want.bindings as Binding[]) // a blocked link subscribes nothing still
    }
  }

  async function forgetDeleted(): Promise<void> {
    if (!sweptAtStart) sweptAtStart = await refusedAtStart(store, deleted, log)
    for (const id of deleted) {
      deleted.delete(id)
      if (!running.has(id))
        await runner.forgetOrphan(id).catch((err: unknown) => log.warn({ err }, 'forget'))
    }
  }

  const passes = createPassQueue(
    async () => {
      await refreshDesired()
      const share = await shareOf(roster, desired.size, log)
      await reconcileRunning()
      await handBack(options, share)
      await startMissing(options, desired, share)
      await forgetDeleted()
    },
    { isClosed, log }
  )

  let debounce: NodeJS.Timeout | undefined
  const events: Subscription = await bus.subscribe(transitionSubject('upstream', '*'), (msg) => {
    try {
      const rec = decodeJson<TransitionRecord>(msg.data)
      if (PURGED.has(rec.to)) deleted.add(rec.machineId)
    } catch (err) {
      log.warn({ err, subject: msg.subject }, 'unreadable transition event')
    }
    dirty = true
    clearTimeout(debounce)
    debounce = setTimeout(() => void passes.run(), EVENT_DEBOUNCE_MS)
  })
  const tick = setInterval(() => void passes.run(), options.everyMs)

  return {
    reconcile: passes.run,
    async stop() {
      clearInterval(tick)
      clearTimeout(debounce)
      await events.unsubscribe().catch(() => {}) // the bus may already be closing
    },
    drain: passes.drain,
  }
}

/** How many bridges this replica should run now; undefined: no limit (no roster, or unread). */
async function shareOf(
  roster: Roster | undefined,
  active: number,
  log: Logger
): Promise<number | undefined> {
  if (!roster) return undefined
  await roster.announce()
  try {
    return fairShare(active, await roster.count())
  } catch (err) {
    log.warn({ err }, 'could not read the supervisor roster; not rebalancing this pass')
    return undefined
  }
}

/** Hand back what this replica runs beyond its share: a replica below it claims them. */
async function handBack(
  { running, runner, log }: ReconcilerOptions,
  share: number | undefined
): Promise<void> {
  if (share === undefined) return
  const excess = excessOf([...running.keys()], share)
  if (excess.length > 0)
    log.info({ handedBack: excess.length, running: running.size, share }, 'rebalancing bridges')
  for (const id of excess) await runner.stop(id, 'stop', 'handed to another supervisor')
}

/** Claim and start the Active upstreams nobody runs, up to this replica's share. */
async function startMissing(
  { running, runner, leases, isClosed, log }: ReconcilerOptions,
  desired: Map<string, Upstream>,
  share: number | undefined
): Promise<void> {
  for (const [id, upstream] of desired) {
    if (running.has(id) || isClosed()) continue
    if (share !== undefined && running.size >= share) return
    try {
      if (await leases.acquire(id)) runner.start(upstream)
    } catch (err) {
      log.warn({ upstreamId: id, err }, 'could not claim the lease')
    }
    // On the in-process bus a claim never waits for I/O: without a turn of the event loop, a
    // pass claiming 1,000 took ~4 s with no lease renewed, and the fence stopped the first half.
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/**
 * Revoked or declined while no supervisor listened: their sessions are purged once at start (a
 * purge is a clean CONNECT, harmless on a session that is already gone). False: ask again.
 */
async function refusedAtStart(
  store: StoreClient,
  into: Set<string>,
  log: Logger
): Promise<boolean> {
  try {
    for (const status of ['Revoked', 'Declined'])
      for (const u of await store.call('upstream.list', { status })) into.add(u.id)
    return true
  } catch (err) {
    log.warn({ err }, 'could not list revoked upstreams; trying again next pass')
    return false
  }
}

/** Where to connect: host, broker port, kind or TLS. */
function targetChanged(u: Upstream, want: Upstream): boolean {
  return (
    u.host !== want.host ||
    u.brokerPort !== want.brokerPort ||
    u.kind !== want.kind ||
    JSON.stringify(u.tls) !== JSON.stringify(want.tls)
  )
}

/**
 * One pass at a time; calls during a pass share exactly one more pass after it. A caller waits
 * for a pass that started after its call, never for an open-ended loop: a store that keeps timing
 * out must not hold up the start (each pass then takes a timeout).
 */
function createPassQueue(
  onePass: () => Promise<void>,
  { isClosed, log }: { isClosed: () => boolean; log: Logger }
): { run(): Promise<void>; drain(): Promise<void> } {
  let pass: Promise<void> | undefined
  let queued: Promise<void> | undefined
  function runPass(): Promise<void> {
    const p: Promise<void> = onePass()
      .catch((err: unknown) => log.error({ err }, 'reconcile failed'))
      .finally(() => {
        if (pass === p) pass = undefined
      })
    return p
  }
  return {
    run(): Promise<void> {
      if (isClosed()) return Promise.resolve()
      if (!pass) return (pass = runPass())
      return (queued ??= pass.then(() => {
        queued = undefined
        return isClosed() ? undefined : (pass = runPass())
      }))
    },
    async drain() {
      await queued
      await pass
    },
  }
}
