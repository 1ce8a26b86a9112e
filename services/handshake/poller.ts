import type { Bus, Subscription } from '../common/bus/bus.ts'
import { decodeJson } from '../common/bus/bus.ts'
import { UbError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import {
  transitionSubject,
  type EventActor,
  type TransitionRecord,
  type Upstream,
} from '../contracts/store.ts'
import type { UpstreamEvent } from '../../machines/index.ts'
import { RemoteError, type RemoteClient, type RemoteStatus } from '../contracts/handshake-client.ts'
import { sha256Hex } from './secret.ts'

/**
 * The downstream's half of the handshake (DESIGN §5): for each handshake upstream, send the
 * request, then poll the upstream server and turn its answer into machine events. Pending
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
}

export const DEFAULT_POLL_MS = 3_000 // 3 s between the first polls of a Pending upstream
export const DEFAULT_SLOW_POLL_MS = 30_000 // 30 s: the cap for Pending, the pace for Approved/Active
const BACKOFF_FACTOR = 1.5
const JITTER = 0.25 // ±25 %: many downstreams restarted together must not poll in step

const POLLED = new Set(['Pending', 'Approved', 'Active'])

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
}: PollerOptions): Promise<Poller> {
  const entries = new Map<string, Entry>()
  const owedHere = new Set<string>() // upstreams this process was told owe a withdrawal
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
    // Pending and an owed withdrawal are retried soon, backing off; the rest at the slow pace.
    const base =
      status === 'Pending' || owed
        ? Math.min(slowPollMs, pollMs * BACKOFF_FACTOR ** e.attempt)
        : slowPollMs
    const delay = base * (1 - JITTER + 2 * JITTER * random())
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
    e.running ??= pollOnce(id).finally(() => {
      e.running = undefined
    })
    return e.running
  }

  async function recordError(up: Upstream, err: unknown): Promise<Upstream> {
    if (!(err instanceof RemoteError)) throw err
    log.info({ upstream: up.id, err: err.message }, 'upstream server not answering as hoped')
    if (up.lastError === err.message) return up
    return store.call('upstream.patch', { id: up.id, lastError: err.message })
  }

  /** Withdraw the request of an upstream deleted while its server could not be reached. */
  async function withdrawOwed(up: Upstream): Promise<Upstream> {
    const error = await withdrawRequest(store, remote, up)
    if (error !== null) {
      const lastError = `withdrawal pending: ${error}`
      return up.lastError === lastError
        ? up
        : store.call('upstream.patch', { id: up.id, lastError })
    }
    log.info({ upstream: up.id }, 'withdrew the request of a deleted upstream')
    owedHere.delete(up.id)
    return store.call('upstream.patch', { id: up.id, withdrawalOwed: false, lastError: null })
  }

  async function pollOnce(id: string): Promise<Upstream> {
    let up = await store.call('upstream.get', { id })
    if (up.status === 'Deleted' && up.withdrawalOwed && up.kind === 'uns') return withdrawOwed(up)
    if (up.kind !== 'uns' || !POLLED.has(up.status)) return up
    const { password: secret } = await store.call('upstream.credentials', { id })
    if (!secret)
      return recordError(up, new RemoteError('this upstream has no handshake secret', null))
    if (!up.remoteRequestId) {
      if (up.status !== 'Pending') return up
      try {
        const res = await remote.sendRequest(up, { instanceId, secretHash: sha256Hex(secret) })
        up = await store.call('upstream.patch', {
          id,
          remoteRequestId: res.requestId,
          lastError: null,
        })
      } catch (err) {
        return recordError(up, err)
      }
    }
    let status: RemoteStatus
    try {
      status = await remote.getStatus(up, up.remoteRequestId!, secret)
    } catch (err) {
      if (err instanceof RemoteError && err.status === 404 && up.status === 'Pending') {
        // The server no longer knows our request (its data was reset): ask again next time.
        return store.call('upstream.patch', {
          id,
          remoteRequestId: null,
          lastError: `${err.message}; asking again`,
        })
      }
      return recordError(up, err)
    }
    if (status.status === 'Withdrawn') {
      return recordError(
        up,
        new RemoteError('the upstream server has this request as Withdrawn', 200)
      )
    }
    await applyStatus(up, status)
    up = await store.call('upstream.get', { id })
    return up.lastError === null ? up : store.call('upstream.patch', { id, lastError: null })
  }

  /** The server's answer → the event that moves our machine there, if any. */
  async function applyStatus(up: Upstream, remoteStatus: RemoteStatus): Promise<void> {
    const event = eventFor(up, remoteStatus)
    if (!event) return
    const actor: EventActor = remoteStatus.instanceId
      ? { kind: 'remote', id: remoteStatus.instanceId }
      : { kind: 'remote' }
    try {
      await store.call('event', { machine: 'upstream', id: up.id, event: { ...event }, actor })
    } catch (err) {
      // Someone else moved the upstream first (an operator, another replica): the next poll sees it.
      if (
        err instanceof UbError &&
        (err.code === 'invalid_transition' || err.code === 'version_conflict')
      ) {
        log.debug({ err, upstream: up.id }, 'handshake event not applied')
        return
      }
      throw err
    }
  }

  const onTransition = (rec: TransitionRecord) => {
    if (rec.machine !== 'upstream') return
    if (rec.to === 'Pending') entry(rec.machineId).attempt = 0
    const kind = (rec.snapshot.context as { kind?: string }).kind ?? 'uns'
    schedule(rec.machineId, rec.to, kind)
  }

  const sub: Subscription = await bus.subscribe(transitionSubject('upstream', '*'), (msg) => {
    try {
      onTransition(decodeJson<TransitionRecord>(msg.data))
    } catch (err) {
      log.warn({ err, subject: msg.subject }, 'unreadable transition on the bus')
    }
  })
  for (const up of await store.call('upstream.list', {})) {
    schedule(up.id, up.status, up.kind, up.withdrawalOwed)
  }

  return {
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
      for (const e of entries.values()) clearTimeout(e.timer)
      entries.clear()
      await sub.unsubscribe()
    },
  }
}

function sameGrants(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n')
}

function eventFor(up: Upstream, remote: RemoteStatus): UpstreamEvent | null {
  switch (remote.status) {
    case 'Accepted':
      if (up.status === 'Pending') return { type: 'upstream.approve', grants: remote.grants }
      // Re-approval with other grants is recorded in Approved (the machine accepts it there).
      if (up.status === 'Approved' && !sameGrants(up.grants, remote.grants))
        return { type: 'upstream.approve', grants: remote.grants }
      return null
    case 'Declined':
      return up.status === 'Pending' ? { type: 'upstream.decline' } : null
    case 'Revoked':
      return { type: 'upstream.revoke' }
    default:
      return null
  }
}

/**
 * Withdraw an upstream's request on its server. Null when nothing is left to withdraw there:
 * withdrawn now, never sent, or already forgotten or closed by the server (404, 409); otherwise
 * why the server could not be asked. Errors other than the server's answer are thrown.
 */
export async function withdrawRequest(
  store: StoreClient,
  remote: RemoteClient,
  up: Upstream
): Promise<string | null> {
  if (!up.remoteRequestId) return null
  const { password: secret } = await store.call('upstream.credentials', { id: up.id })
  try {
    await remote.withdraw(up, up.remoteRequestId, secret ?? '')
    return null
  } catch (err) {
    if (!(err instanceof RemoteError)) throw err
    return err.status === 404 || err.status === 409 ? null : err.message
  }
}
