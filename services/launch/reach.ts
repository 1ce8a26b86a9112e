import { ConfigError, UbError } from '../common/errors.ts'

/**
 * Failures to reach the fabric's servers (Postgres, NATS), told as one line that names the
 * setting and the cause, with passwords redacted: a wrong URL is a setting to fix, not a stack
 * trace to read.
 */

const WHERE = {
  databaseUrl: 'DATABASE_URL, UB_DATABASE_URL or --database-url',
  natsUrl: 'NATS_URL, UB_NATS_URL or --nats-url',
}

/**
 * A URL (or a comma-separated list of them) fit to print: the password of `user:password@`
 * and a `password=` query parameter become `***`; with `bareUserIsSecret` a userinfo without a
 * colon (a NATS token) does too.
 */
export function redactUrl(raw: string, { bareUserIsSecret = false } = {}): string {
  return listOf(raw)
    .map((one) => {
      const url = one.replace(/([?&](?:password|pass)=)[^&]*/gi, '$1***')
      const at = url.lastIndexOf('@')
      if (at === -1) return url
      const start = url.includes('//') ? url.indexOf('//') + 2 : 0
      if (start > at) return url
      const userinfo = url.slice(start, at)
      const colon = userinfo.indexOf(':')
      if (colon === -1) return bareUserIsSecret ? url.slice(0, start) + '***' + url.slice(at) : url
      return url.slice(0, start) + userinfo.slice(0, colon) + ':***' + url.slice(at)
    })
    .join(',')
}

const listOf = (raw: string) => raw.split(',').map((one) => one.trim())

/** The URL as printed, where it was read from, and whether anything in it was hidden. */
function shown(url: string, where: string, bareUserIsSecret = false): string {
  const redacted = redactUrl(url, { bareUserIsSecret })
  return `${redacted} (${where}${redacted === listOf(url).join(',') ? '' : '; credentials redacted'})`
}

/** The error a socket or server answered with, under the wrappers drivers add (drizzle, AggregateError). */
function rootCause(err: unknown): { code?: string; message: string } {
  let e = err as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown[] }
  for (let depth = 0; depth < 5; depth++) {
    if (typeof e?.code === 'string' && e.code !== '') break
    const inner = e?.cause ?? e?.errors?.[0]
    if (!inner) break
    e = inner as typeof e
  }
  const code = typeof e?.code === 'string' ? e.code : undefined
  const message = String(e?.message ?? err).split('\n')[0]!
  return code === undefined ? { message } : { code, message }
}

const SOCKET_CAUSES: Record<string, string> = {
  ECONNREFUSED: 'connection refused (nothing listens there)',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name could not be resolved',
  ETIMEDOUT: 'timed out',
  CONNECT_TIMEOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
}

/** Why Postgres could not be used, in a few words; the server's own words for what it refused. */
function postgresCause(err: unknown): string {
  const { code, message } = rootCause(err)
  if (code && SOCKET_CAUSES[code]) return SOCKET_CAUSES[code]
  if (code === '28P01' || code === '28000') return `authentication failed: ${message}`
  if (code === '3D000') return `${message}; \`uns-bridge migrate\` creates it`
  if (code === '42501') return `${message} (the user needs CREATEDB, or create the database)`
  return message
}

/** A Postgres connection failure as a config error naming `databaseUrl`; other errors unchanged. */
export function postgresFailure(err: unknown, databaseUrl: string, doing = 'connect to'): Error {
  const { code } = rootCause(err)
  const refused = code !== undefined && (code in SOCKET_CAUSES || /^(28|3D|42501)/.test(code))
  if (!refused) return err instanceof Error ? err : new Error(String(err))
  return new ConfigError(
    'databaseUrl',
    `cannot ${doing} Postgres at ${shown(databaseUrl, WHERE.databaseUrl)}: ${postgresCause(err)}`,
    { cause: err }
  )
}

/** A bus that cannot be opened (nothing listens, no JetStream) as a config error naming `natsUrl`. */
export function natsFailure(err: unknown, natsUrl: string): Error {
  if (!(err instanceof UbError) || !['bus_unavailable', 'bus_unsupported'].includes(err.code)) {
    return err instanceof Error ? err : new Error(String(err))
  }
  // bus_unsupported is already our own words (version, JetStream); bus_unavailable wraps nats.js's.
  const cause = err.code === 'bus_unsupported' ? err.message : natsCause(err.cause ?? err)
  return new ConfigError(
    'natsUrl',
    `cannot connect to NATS at ${shown(natsUrl, WHERE.natsUrl, true)}: ${cause}`,
    { cause: err }
  )
}

function natsCause(err: unknown): string {
  const { code, message } = rootCause(err)
  if (code && SOCKET_CAUSES[code]) return SOCKET_CAUSES[code]
  if (/authorization|authentication/i.test(message)) return `authentication failed: ${message}`
  return message
}
