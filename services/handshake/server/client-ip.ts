import type { Context } from 'hono'

/** How a runtime tells the socket's remote address (node: `getConnInfo` from @hono/node-server). */
export type RemoteAddress = (c: Context) => string | undefined

/**
 * The caller's IP as this server saw it: the socket's peer, or, only when `trustProxy` is set,
 * the last `X-Forwarded-For` entry: the one our own reverse proxy appended, the address it saw
 * (as Express's `trust proxy = 1`). Entries before it come from the client and can be forged, so
 * they decide neither the recorded source IP nor the rate-limit bucket. Without the flag the
 * header is ignored: any client can send it.
 */
export function clientIp(
  c: Context,
  { remote, trustProxy }: { remote: RemoteAddress; trustProxy: boolean }
): string {
  if (trustProxy) {
    const last = c.req.header('x-forwarded-for')?.split(',').pop()?.trim()
    if (last) return normalizeIp(last)
  }
  let address: string | undefined
  try {
    address = remote(c)
  } catch {
    // app.request() in tests has no socket: there is no address to report.
    address = undefined
  }
  return address ? normalizeIp(address) : 'unknown'
}

/** `::ffff:127.0.0.1` (IPv4 on a dual-stack socket) → `127.0.0.1`. */
export function normalizeIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice('::ffff:'.length) : ip
}
