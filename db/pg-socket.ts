import { connect, type Socket } from 'node:net'

/**
 * The sockets of our postgres.js pools, made here so their errors can be told apart. When the
 * server ends connections under load, postgres.js can reject an internal promise nobody holds
 * with the socket's own error (`read ECONNRESET`, a stack of Node internals only), and the process
 * died of it (test/store/pg-terminate-storm.test.ts, 1 run in 10). Every error these sockets
 * emit is remembered (weakly), so the crash guard excuses exactly those and nothing else.
 */
const socketErrors = new WeakSet<object>()

export const isPostgresSocketError = (err: unknown): boolean =>
  typeof err === 'object' && err !== null && socketErrors.has(err)

/** What postgres.js hands its `socket` option: its parsed options. */
interface SocketOptions {
  host: string[]
  port: number[]
  path?: string | false
}

/**
 * postgres.js's `socket` option: a TCP socket to the first host (a URL with several hosts keeps
 * postgres.js's own sockets; see `usesOwnSockets`), handed over while it connects. postgres.js
 * writes its startup message at once (a socket buffers it until connected), applies its own
 * `connect_timeout`, and learns of a failed connect from the socket's `error` and `close`.
 * Rejecting instead (as this did) left the pool's connection "connecting" for good: postgres.js
 * only frees a connection on its socket's `close`, so once a restart of Postgres had refused `max`
 * connects, every later query waited forever and the store answered nothing (npm run chaos,
 * postgres-restart; test/store/pg-restart-pool.test.ts).
 */
export function postgresSocket(options: SocketOptions): Socket {
  const socket = options.path
    ? connect(options.path)
    : connect(options.port[0] ?? 5432, options.host[0] ?? 'localhost')
  socket.on('error', (err) => socketErrors.add(err))
  return socket
}

/** One host: our sockets. Several (failover lists): postgres.js's, which walk the list. */
export const usesOwnSockets = (databaseUrl: string): boolean => {
  try {
    return !new URL(databaseUrl).host.includes(',')
  } catch {
    return false // postgres.js reports a bad URL itself, naming it
  }
}
