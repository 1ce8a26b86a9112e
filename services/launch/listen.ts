import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
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

/** Where the embedded default keeps the MQTT port it fell back to (README, Quick start). */
export const MQTT_PORT_FILE = 'mqtt-port'

/**
 * The MQTT port a default start fell back to before, kept in the data folder so downstreams
 * configured with it keep working across restarts; undefined when none or unreadable.
 */
export function rememberedMqttPort(dataDir: string): number | undefined {
  let text: string
  try {
    text = readFileSync(join(dataDir, MQTT_PORT_FILE), 'utf8').trim()
  } catch {
    return undefined
  }
  const port = Number(text)
  return /^\d+$/.test(text) && port > 0 && port < 65_536 ? port : undefined
}

/** Keep the port a default start listens on when it is not the default one (1883). */
export function rememberMqttPort(dataDir: string, port: number, defaultPort: number): void {
  const file = join(dataDir, MQTT_PORT_FILE)
  if (port === defaultPort) rmSync(file, { force: true })
  else writeFileSync(file, `${port}\n`)
}
