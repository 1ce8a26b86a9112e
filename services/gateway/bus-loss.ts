import type { Bus } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'

export const DEFAULT_BUS_CHECK_MS = 2_000
/** Failed round trips in a row that make the bus lost; each fails past `everyMs`. */
const FAILURES = 3

/**
 * Whether this gateway still reaches the bus, by a round trip every `everyMs`.
 *
 * A gateway cut off from NATS (a partition; its TCP connection to NATS silent, so the client
 * notices only after minutes of missed pings) kept its clients: a bridge session on it received
 * nothing while the other gateways queued its messages in KV and sent their live copies to a
 * gateway that never got them, and after the heal only the queue sweep (256 every 5 s) brought
 * them. `npm run chaos`, gateway-nats-partition: 14,065 acknowledged messages still undelivered
 * at the end of the run. Once `failures` round trips in a row failed, `onLost` runs (the gateway
 * drops its clients, which move to a gateway that reaches the bus, and refuses new ones); the
 * first that succeeds again runs `onBack`.
 */
export function watchBusLoss({
  bus,
  log,
  everyMs,
  onLost,
  onBack = () => {},
}: {
  bus: Pick<Bus, 'flush' | 'reconnect'>
  log: Logger
  /** ms between round trips; 0 = no watch. */
  everyMs: number
  onLost: () => void
  onBack?: () => void
}): { lost(): boolean; stop(): void } {
  if (everyMs <= 0) return { lost: () => false, stop: () => {} }
  let failed = 0
  let lost = false
  let running = false
  const roundTrip = () =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), everyMs)
      bus.flush().then(
        () => (clearTimeout(timer), resolve(true)),
        () => (clearTimeout(timer), resolve(false))
      )
    })
  const timer = setInterval(() => {
    if (running) return
    running = true
    void roundTrip()
      .then((ok) => {
        failed = ok ? 0 : failed + 1
        if (!lost && failed >= FAILURES) {
          lost = true
          log.warn({ failures: failed }, 'the bus does not answer: dropping clients, refusing new')
          onLost()
          // Dial again: a silent connection would wait out TCP's back-off after the heal (~24 s).
          bus.reconnect?.().catch((err: unknown) => log.warn({ err }, 'bus reconnect failed'))
        } else if (lost && ok) {
          lost = false
          log.info('the bus answers again: accepting clients')
          onBack()
        }
      })
      .finally(() => (running = false))
  }, everyMs)
  timer.unref()
  return { lost: () => lost, stop: () => clearInterval(timer) }
}
