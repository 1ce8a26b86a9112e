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
  connect_timeout?: number
}

/**
 * postgres.js's `socket` option: a connected TCP socket to the first host (a URL with several
 * hosts keeps postgres.js's own sockets; see `usesOwnSockets`). With this option postgres.js does
 * not connect the socket itself, so the connect timeout is kept here.
 */
export function postgresSocket(options: SocketOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = options.path
      ? connect(options.path)
      : connect(options.port[0] ?? 5432, options.host[0] ?? 'localhost')
    socket.on('error', (err) => socketErrors.add(err))
    const timeoutMs = (options.connect_timeout ?? 30) * 1_000
    const timer = setTimeout(() => {
      socket.destroy()
      reject(Object.assign(new Error('connect timeout'), { code: 'CONNECT_TIMEOUT' }))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.removeListener('error', reject)
      resolve(socket)
    })
    socket.once('error', reject)
    socket.once('error', () => clearTimeout(timer))
  })
}

/** One host: our sockets. Several (failover lists): postgres.js's, which walk the list. */
export const usesOwnSockets = (databaseUrl: string): boolean => {
  try {
    return !new URL(databaseUrl).host.includes(',')
  } catch {
    return false // postgres.js reports a bad URL itself, naming it
  }
}
