import type { Logger } from '../../common/log.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import { UbError } from '../../common/errors.ts'

export interface ExpiryOptions {
  store: StoreClient
  log: Logger
  /** How long a request may stay Pending (config `handshakePendingTtlMs`). */
  ttlMs: number
  onExpired?: () => void
  now?: () => number
}

export interface ExpirySweeper {
  sweepNow(): Promise<number>
  close(): Promise<void>
}

const PAGE = 100
/** A request ends Expired within a tenth of its lifetime after it is due, and within a minute. */
export const sweepInterval = (ttlMs: number): number =>
  Math.min(60_000, Math.max(100, Math.floor(ttlMs / 10)))

/**
 * Pending requests do not wait for ever: past the TTL each gets `request.expire` from the
 * system, so it ends `Expired` through the machine and its log like any decision, and its
 * slot under the Pending bounds is free again. The downstream's poller then asks again with
 * the same secret (README.md, Limits). Several sweepers (handshake replicas) are harmless: the
 * machine refuses a second expire.
 */
export function startExpirySweeper(options: ExpiryOptions): ExpirySweeper {
  const { store, log, ttlMs, onExpired, now = Date.now } = options
  let running: Promise<number> | null = null
  let closed = false

  async function sweep(): Promise<number> {
    const cutoff = now() - ttlMs
    let expired = 0
    let cursor: string | undefined
    for (;;) {
      const page = await store.call('request.page', {
        status: 'Pending',
        limit: PAGE,
        ...(cursor ? { cursor } : {}),
      })
      for (const r of page.items) {
        // Oldest first: the first one young enough ends the sweep.
        if (Date.parse(r.createdAt) > cutoff) return expired
        try {
          await store.call('event', {
            machine: 'request',
            id: r.id,
            event: { type: 'request.expire' },
            actor: { kind: 'system', id: 'handshake-expiry' },
          })
          expired++
          onExpired?.()
        } catch (err) {
          // Decided meanwhile (accepted, declined, withdrawn): nothing to expire.
          if (!(err instanceof UbError && err.code === 'invalid_transition')) throw err
        }
      }
      if (page.next === null) return expired
      cursor = page.next
    }
  }

  const sweepNow = () => (running ??= sweep().finally(() => (running = null)))
  const timer = setInterval(() => {
    if (closed) return
    sweepNow().catch((err: unknown) => log.warn({ err }, 'handshake expiry sweep failed'))
  }, sweepInterval(ttlMs))
  timer.unref?.()

  return {
    sweepNow,
    async close() {
      closed = true
      clearInterval(timer)
      await running?.catch(() => 0)
    },
  }
}
