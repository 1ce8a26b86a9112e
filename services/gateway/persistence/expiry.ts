/**
 * Persistent sessions nobody comes back for (ARCHITECTURE.md §10). MQTT 3.1.1 sessions never
 * expire, so an abandoned one would keep its subscriptions in every gateway's memory and its
 * queue growing up to its bound for ever. A session unseen for `expiryMs` (no connect, no
 * disconnect, no touch while connected) loses its subscriptions and its queue, as Mosquitto's
 * `persistent_client_expiration` does. Bridges' local sessions (`ub-bridge-…`) are exempt: their
 * lifetime is their upstream's, and the supervisor ends them when the upstream is revoked.
 *
 * Every gateway sweeps; a sweep first touches its own connected sessions, so a session connected
 * anywhere is never older than one sweep. Deleting the same session twice is harmless.
 */
import { BRIDGE_CLIENT_PREFIX } from '../../contracts/links.ts'
import type { Logger } from '../../common/log.ts'

export interface SessionExpiryOptions {
  expiryMs: number
  /** Sessions connected to this gateway with clean session off. */
  connected: () => Iterable<string>
  touch: (clientId: string) => Promise<void>
  unseenSince: (before: number) => Promise<string[]>
  /** Forget the session: its subscriptions, then its queue. */
  end: (clientId: string) => Promise<void>
  onExpired: () => void
  log: Logger
  now?: () => number
}

const MAX_SWEEP_MS = 3_600_000 // 1 h

export function startSessionExpiry(options: SessionExpiryOptions): {
  stop(): void
  sweep(): Promise<number>
} {
  const { expiryMs, log, now = Date.now } = options
  let running: Promise<number> | undefined

  async function sweepOnce(): Promise<number> {
    for (const id of options.connected()) await options.touch(id)
    let ended = 0
    for (const id of await options.unseenSince(now() - expiryMs)) {
      if (id.startsWith(BRIDGE_CLIENT_PREFIX)) continue
      await options.end(id)
      options.onExpired()
      ended++
    }
    if (ended) log.info({ ended, expiryMs }, 'persistent sessions expired')
    return ended
  }

  const sweep = (): Promise<number> =>
    (running ??= sweepOnce()
      .catch((err: unknown) => {
        log.warn({ err }, 'session expiry sweep failed; next one retries')
        return 0
      })
      .finally(() => (running = undefined)))

  const timer =
    expiryMs > 0 ? setInterval(() => void sweep(), Math.min(MAX_SWEEP_MS, expiryMs / 4)) : undefined
  timer?.unref()
  return {
    stop: () => clearInterval(timer),
    sweep,
  }
}
