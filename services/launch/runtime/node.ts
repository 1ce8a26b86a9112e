import { serve } from '@hono/node-server'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'

export interface HttpServer {
  port: number
  close(): Promise<void>
}

/**
 * Serve a fetch handler over HTTP, or HTTPS when given a certificate, on Node (and on Bun and
 * Deno through their node:http and node:https).
 */
export function serveHttp({
  fetch,
  port,
  hostname,
  tls,
}: {
  fetch: (req: Request, env?: object) => Response | Promise<Response>
  port: number
  hostname: string
  tls?: { cert: string; key: string }
}): Promise<HttpServer> {
  const secure = tls
    ? { createServer: createHttpsServer, serverOptions: { cert: tls.cert, key: tls.key } }
    : {}
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, port, hostname, ...secure }, (info: AddressInfo) => {
      let closed: Promise<void> | undefined
      resolve({
        port: info.port,
        close: () =>
          (closed ??= new Promise<void>((done) => {
            // SSE streams would hold close() open forever: end idle and active sockets.
            server.close(() => done())
            ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
          })),
      })
    })
    server.once('error', reject)
  })
}
