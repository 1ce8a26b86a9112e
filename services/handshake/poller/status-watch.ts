/**
 * Accepted, declined or revoked is known on the downstream within about a second: for each
 * handshake upstream in Pending, Approved or Active, one long poll at a time waits at the
 * upstream server for its request to leave the status we know (the server holds it up to
 * WAIT_S seconds; the upstream never has to reach us, as an edge behind NAT needs). When the
 * answer differs, the regular poll runs at once and turns it into machine events. A server that
 * answers at once (an older version) is asked at the regular polls' pace instead.
 */
import { UbError } from '../../common/errors.ts'
import type { Logger } from '../../common/log.ts'
import type { RemoteClient } from '../../contracts/handshake-client.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { Upstream } from '../../contracts/store.ts'
import { POLLED } from './poll-steps.ts'

export const WAIT_S = 25
/** An answer sooner than this to a long poll means the server did not wait. */
const WAITED_MS = 1_000
const RETRY_MS = 2_000
const RETRY_MAX_MS = 30_000

export interface StatusWatch {
  /**
   * Watch this upstream (again) while it is Pending, Approved or Active. Called after every
   * regular poll: a watch waiting for the request to be sent looks again at once.
   */
  ensure(id: string): void
  close(): void
}

export function startStatusWatch({
  store,
  remote,
  log,
  pollNow,
  slowMs,
}: {
  store: StoreClient
  remote: RemoteClient
  log: Logger
  /** The regular poll, run now: it applies what the server says. */
  pollNow(id: string): Promise<Upstream>
  /** The pace when a server does not wait. */
  slowMs: number
}): StatusWatch {
  const watching = new Set<string>()
  let closed = false
  // One watch per upstream, so at most one sleep each: its waker, by upstream id.
  const sleeps = new Map<string, () => void>()
  // Watched upstreams whose request was not sent yet when last looked at: they back off (1,000
  // upstreams whose server never answers must not cost 500 store reads a second), and the
  // regular poll that sends the request wakes them (an Accept right after the create is seen).
  const unsent = new Set<string>()
  const sleep = (id: string, ms: number) =>
    new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer)
        sleeps.delete(id)
        resolve()
      }
      const timer = setTimeout(wake, ms)
      timer.unref?.()
      sleeps.set(id, wake)
    })
  const wakeUnsent = (id: string) => {
    if (unsent.has(id)) sleeps.get(id)?.()
  }

  /** One long poll; what to wait before the next one (0: at once), or null to stop watching. */
  async function once(id: string, failures: number): Promise<number | null> {
    const up = await store.call('upstream.get', { id })
    if (up.kind !== 'uns' || !POLLED.has(up.status)) return null
    if (!up.remoteRequestId) {
      unsent.add(id) // not sent yet: the regular poll sends it, then wakes us
      return Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** failures)
    }
    unsent.delete(id)
    const seen = up.status === 'Pending' ? 'Pending' : 'Accepted'
    const secret = (await store.call('upstream.credentials', { id })).password ?? ''
    const asked = Date.now()
    let status: string
    try {
      status = (await remote.waitStatus(up, up.remoteRequestId, secret, seen, WAIT_S)).status
    } catch (err) {
      log.debug({ err, upstream: id }, 'status long poll failed; asked again later')
      return Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** failures)
    }
    if (status !== seen) {
      const after = await pollNow(id)
      // The poll changed nothing (the server says something the machine does not take now):
      // do not ask again in a tight loop.
      return after.status === up.status ? slowMs : 0
    }
    return Date.now() - asked < WAITED_MS ? slowMs : 0
  }

  async function watch(id: string): Promise<void> {
    let failures = 0
    while (!closed && watching.has(id)) {
      let next: number | null
      try {
        next = await once(id, failures)
        failures = next !== null && next >= RETRY_MS && next < slowMs ? failures + 1 : 0
      } catch (err) {
        if (err instanceof UbError && err.code === 'not_found') next = null
        else {
          log.warn({ err, upstream: id }, 'status watch failed; tried again later')
          next = RETRY_MAX_MS
        }
      }
      if (next === null) break
      if (next > 0) await sleep(id, next)
    }
    watching.delete(id)
    unsent.delete(id)
  }

  return {
    ensure(id) {
      if (closed) return
      if (watching.has(id)) return wakeUnsent(id)
      watching.add(id)
      void watch(id)
    },
    close() {
      closed = true
      watching.clear()
      for (const wake of [...sleeps.values()]) wake()
    },
  }
}
