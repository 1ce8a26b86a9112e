import type { Logger } from '../common/log.ts'
import { ConfigError } from '../common/errors.ts'

/**
 * Bind a listener on the configured port. A port left at its default that is already taken
 * (this machine's Mosquitto holds 1883) falls back to an ephemeral one with a warning, so
 * `npm start` works anywhere; a port the user chose is never silently changed.
 */
export async function listenWithFallback<T>({
  key,
  port,
  explicit,
  log,
  listen,
}: {
  key: string
  port: number
  explicit: ReadonlySet<string>
  log: Logger
  listen: (port: number) => Promise<T>
}): Promise<T> {
  try {
    return await listen(port)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EADDRINUSE' && code !== 'EACCES') throw err
    if (explicit.has(key)) {
      throw new ConfigError(key, `port ${port} cannot be bound (${code}); choose another`, {
        cause: err,
      })
    }
    log.warn({ key, port, code }, `default port ${port} is taken; using an ephemeral port instead`)
    return listen(0)
  }
}
