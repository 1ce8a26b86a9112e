import { isPostgresSocketError } from '../../../db/pg-socket.ts'
import type { Logger } from '../../common/log.ts'

/** A stack that passes through postgres.js's connection code, ESM or CommonJS build. */
const RAISED_IN_POSTGRES_JS = /postgres[\\/](src|cjs[\\/]src)[\\/]connection\.js/

/**
 * postgres.js 3.4.x writes to a connection's socket from a `setImmediate` after the backend died
 * under a transaction (`begin`) and the socket was already dropped: a TypeError that no caller
 * can catch, and the process dies (porsager/postgres#1208, fix proposed in #1209). The failed
 * transaction has already rejected and the connection is gone, so that one error is safe to log
 * and drop. Any other uncaught exception still ends the process, as Node's default does.
 */
export function isPostgresJsDeadSocketWrite(err: unknown): boolean {
  return (
    err instanceof TypeError &&
    /reading 'write'/.test(err.message) &&
    /\bnextWrite\b/.test(err.stack ?? '') &&
    RAISED_IN_POSTGRES_JS.test(err.stack ?? '')
  )
}

/**
 * The same class of failure, other forms: when the backend dies under load, postgres.js can
 * reject an internal promise that no caller holds, with `CONNECTION_CLOSED` (1 in 20 runs of the
 * dead-socket fixture on a busy machine) or with the server's own goodbye, a `57P01
 * terminating connection due to administrator command` (1 in 6 runs of connections cut every
 * 50 ms, test/store/pg-terminate-storm.test.ts). A rejection nobody handles has no caller
 * waiting on it: the query a caller does hold rejects with its own copy. Excused are connection
 * losses only, and only when raised inside postgres.js: its own connection codes, SQLSTATE
 * classes 08 (connection exception) and 57P (operator intervention: shutdown, crash, restart),
 * and socket errors.
 */
const CONNECTION_LOSS = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
])

export function isPostgresJsUnheldConnectionLoss(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code
  return (
    err instanceof Error &&
    typeof code === 'string' &&
    (CONNECTION_LOSS.has(code) || /^(08|57P)/.test(code)) &&
    // Raised in postgres.js, or a socket error its pool's socket emitted (db/pg-socket.ts):
    // those carry only Node's internal frames (`read ECONNRESET` at TCP.onStreamRead).
    (RAISED_IN_POSTGRES_JS.test(err.stack ?? '') || isPostgresSocketError(err))
  )
}

export function installPostgresJsCrashGuard(log: Logger): () => void {
  const onUncaught = (err: Error) => {
    if (isPostgresJsDeadSocketWrite(err)) {
      log.warn({ err }, 'dropped a write to a dead Postgres connection (porsager/postgres#1208)')
      return
    }
    if (isPostgresJsUnheldConnectionLoss(err)) {
      log.warn({ err }, 'a Postgres connection was lost under a query nobody awaited')
      return
    }
    log.fatal({ err }, 'uncaught exception')
    console.error(err)
    process.exit(1)
  }
  process.on('uncaughtException', onUncaught)
  return () => void process.off('uncaughtException', onUncaught)
}
