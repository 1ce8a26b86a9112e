import { request } from 'node:https'
import { nodeTlsOptions } from './node-tls.ts'
import type { TlsOptions } from './store.ts'

const NULL_BODY = new Set([204, 205, 304]) // statuses whose Response must have no body

/**
 * `fetch` over https with the upstream's own TLS options (a private CA, a client certificate, a
 * server name): the global fetch takes no CA. node:https is on Node, Deno and Bun alike.
 */
export function tlsFetch(tls: TlsOptions): typeof globalThis.fetch {
  return (input, init = {}) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(String(input))
      const headers = Object.fromEntries(new Headers(init.headers).entries())
      const req = request(
        url,
        {
          method: init.method ?? 'GET',
          headers,
          ...nodeTlsOptions(tls),
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', reject)
          res.on('end', () =>
            resolve(
              // A Response for 204, 205 or 304 must not have a body (the constructor throws).
              new Response(NULL_BODY.has(res.statusCode ?? 0) ? null : Buffer.concat(chunks), {
                status: res.statusCode ?? 502,
                headers: Object.entries(res.headers).flatMap(([k, v]) =>
                  v === undefined
                    ? []
                    : (Array.isArray(v) ? v : [v]).map((x) => [k, x] as [string, string])
                ),
              })
            )
          )
        }
      )
      req.on('error', (err) => reject(Object.assign(new TypeError('fetch failed'), { cause: err })))
      init.signal?.addEventListener('abort', () => req.destroy(init.signal!.reason as Error))
      if (init.body !== undefined && init.body !== null) req.write(String(init.body))
      req.end()
    })
}
