import { pino, type Logger } from 'pino'

export type { Logger }

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'

/** Structured JSON logs on stdout (pino): one line per event, fields not prose. */
export function createLogger({
  level = 'info',
  name = 'uns-bridge',
}: { level?: LogLevel; name?: string } = {}): Logger {
  return pino({ name, level, base: { pid: process.pid } })
}

/** A logger that writes nothing, for tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
