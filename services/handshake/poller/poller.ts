import type { Bus, Subscription } from '../../common/bus/bus.ts'
import { decodeJson } from '../../common/bus/bus.ts'
import { UbError } from '../../common/errors.ts'
import type { Logger } from '../../common/log.ts'
import type { RemoteClient } from '../../contracts/handshake-client.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import { transitionSubject, type TransitionRecord, type Upstream } from '../../contracts/store.ts'
import { pollOnce, POLLED, type PollContext } from './poll-steps.ts'
import { startStatusWatch, type StatusWatch } from './status-watch.ts'

/**
 * The downstream's half of the handshake (ARCHITECTURE.md §11): for each handshake upstream, send
 * the request, then poll the upstream server and turn its answer into machine events. Pending
 * upstreams are polled every few seconds, backing off to `slowPollMs`; Approved and Active ones
 * every `slowPollMs`, so a revocation is seen. Declined, Revoked and Deleted ones are left alone.
 *
 * The store is the truth: each poll re-reads the upstream, and every transition on the bus
 * reschedules it, so a restart (or another replica's change) converges.
 */
export interface Poller {
  /** Ask the upstream server now (after any poll in flight); resolves with the upstream afterwards. */
  pollNow(id: string): Promise<Upstream>
  /** Stop polling one upstream (it is being deleted). */
  forget(id: string): void
  /** A Deleted upstream whose request could not be withdrawn: keep asking its server to. */
  owe(id: string): void
  close(): Promise<void>
}

export interface PollerOptions {
  store: StoreClient
  bus: Bus
  remote: RemoteClient
  log: Logger
  instanceId: string
  pollMs?: number
  slowPollMs?: number
  random?: () => number
  /** Schedules the next poll (tests record the delays it is asked for). */
  setTimer?: (run: () => void, delayMs: number) => ReturnType<typeof setTimeout>
  /** Also wait at the server for the status to change (status-watch.ts); default on. */
  longPoll?: boolean
}

export const DEFAULT_POLL_MS = 3_000 // 3 s between the first polls of a Pending upstream
export const DEFAULT_SLOW_POLL_MS = 30_000 // 30 s: the cap for Pending, the pace for Approved/Active
const BACKOFF_FACTOR = 1.5
const JITTER = 0.25 // ±25 %: many downstreams restarted together must not poll in step

interface Entry {
  timer?: ReturnType<typeof setTimeout>
  attempt: number
  running?: Promise<Upstream>
}

/** Start polling every handshake upstream in the store, and follow the upstream transitions. */
export async function startPoller({
  store,
  bus,
  remote,
  log,
  instanceId,
  pollMs = DEFAULT_POLL_MS,
  slowPollMs = DEFAULT_SLOW_POLL_MS,
  random = Math.random,
  setTimer = setTimeout,
  longPoll = true,
}: PollerOptions): Promise<Poller> {
  const entries = new Map<string, Entry>()
  const owedHere = new Set<string>() // upstreams this process was told owe a withdrawal
  const ctx: PollContext = { store, remote, log, instanceId, owedHere }
  let closed = false

  const entry = (id: string): Entry => {
    let e = entries.get(id)
    if (!e) entries.set(id, (e = { attempt: 0 }))
    return e
  }

  function schedule(id: string, status: string, kind: string, withdrawalOwed = false): void {
    if (closed) return
    const e = entry(id)
    clearTimeout(e.timer)
    // `owedHere`: the Deleted transition may arrive after `owe()`; it must not cancel it.
    const owed = status === 'Deleted' && (withdrawalOwed || owedHere.has(id))
    if (kind !== 'uns' || !(POLLED.has(status) || owed)) {
      entries.delete(id)
      return
    }
    if (POLLED.has(status)) watch?.ensure(id)
    const delay = pollDelay(status === 'Pending' || owed, e.attempt, pollMs, slowPollMs, random)
    e.timer = setTimer(() => void background(id), delay)
    e.timer.unref?.()
  }

  async function background(id: string): Promise<void> {
    try {
      const up = await run(id)
      entry(id).attempt += 1
      schedule(id, up.status, up.kind, up.withdrawalOwed)
    } catch (err) {
      if (closed) return
      if (err instanceof UbError && err.code === 'not_found') return void entries.delete(id)
      // The store is unreachable or busy: try again later, at the slow pace.
      log.warn({ err, upstream: id }, 'handshake poll failed')
      schedule(id, 'Approved', 'uns')
    }
  }

  function run(id: string): Promise<Upstream> {
    const e = entry(id)
    e.running ??= pollOnce(ctx, id).finally(() => {
      e.running = undefined
    })
    return e.running
  }

  const onTransition = (rec: TransitionRecord) => {
    if (rec.machine !== 'upstream') return
    if (rec.to === 'Pending') entry(rec.machineId).attempt = 0
    const kind = (rec.snapshot.context as { kind?: string }).kind ?? 'uns'
    schedule(rec.machineId, rec.to, kind)
  }

  let watch: StatusWatch | undefined
  const sub: Subscription = await bus.subscribe(transitionSubject('upstream', '*'), (msg) => {
    try {
      onTransition(decodeJson<TransitionRecord>(msg.data))
    } catch (err) {
      log.warn({ err, subject: msg.subject }, 'unreadable transition on the bus')
    }
  })
  const poller: Poller = {
    async pollNow(id) {
      const e = entry(id)
      await e.running?.catch(() => undefined)
      e.attempt = 0
      const up = await run(id)
      schedule(id, up.status, up.kind)
      return up
    },
    forget(id) {
      clearTimeout(entries.get(id)?.timer)
      entries.delete(id)
    },
    owe(id) {
      owedHere.add(id)
      entry(id).attempt = 0
      schedule(id, 'Deleted', 'uns', true)
    },
    async close() {
      if (closed) return
      closed = true
      watch?.close()
      for (const e of entries.values()) clearTimeout(e.timer)
      entries.clear()
      await sub.unsubscribe()
    },
  }
  if (longPoll)
    watch = startStatusWatch({ store, remote, log, pollNow: poller.pollNow, slowMs: slowPollMs })
  for (const up of await store.call('upstream.list', {})) {
    schedule(up.id, up.status, up.kind, up.withdrawalOwed)
  }
  return poller
}

/**
 * How long until the next poll. Pending and an owed withdrawal (`soon`) are retried soon, backing
 * off; the rest at the slow pace.
 */
function pollDelay(
  soon: boolean,
  attempt: number,
  pollMs: number,
  slowPollMs: number,
  random: () => number
): number {
  const base = soon ? Math.min(slowPollMs, pollMs * BACKOFF_FACTOR ** attempt) : slowPollMs
  return base * (1 - JITTER + 2 * JITTER * random())
}
