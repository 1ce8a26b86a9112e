import type { Logger } from '../../common/log.ts'

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
    /postgres[\\/](src|cjs[\\/]src)[\\/]connection\.js/.test(err.stack ?? '')
  )
}

/**
 * The same class of failure, second form: when the backend dies under load, postgres.js can
 * reject an internal promise that no caller holds with `CONNECTION_CLOSED` (seen 1 in 20 runs of
 * the dead-socket fixture on a busy machine). The query that a caller does hold rejects with its
 * own copy, so this unhandled one carries nothing a caller could still act on.
 */
export function isPostgresJsUnheldConnectionClosed(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err as { code?: unknown }).code === 'CONNECTION_CLOSED' &&
    /postgres[\\/](src|cjs[\\/]src)[\\/]connection\.js/.test(err.stack ?? '')
  )
}

export function installPostgresJsCrashGuard(log: Logger): () => void {
  const onUncaught = (err: Error) => {
    if (isPostgresJsDeadSocketWrite(err)) {
      log.warn({ err }, 'dropped a write to a dead Postgres connection (porsager/postgres#1208)')
      return
    }
    if (isPostgresJsUnheldConnectionClosed(err)) {
      log.warn({ err }, 'a Postgres connection closed under a query nobody awaited')
      return
    }
    log.fatal({ err }, 'uncaught exception')
    console.error(err)
    process.exit(1)
  }
  process.on('uncaughtException', onUncaught)
  return () => void process.off('uncaughtException', onUncaught)
}
