import type { Context } from 'hono'
import { isIPv6 } from 'node:net'

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

/**
 * The network a rate limit or a Pending cap counts by: an IPv6 address's /64 (one subscriber
 * usually holds a whole /64, so per address would give them 2^64 buckets), an IPv4 address as is.
 * Anything else (`unknown`) is its own key.
 */
export function networkKey(ip: string): string {
  if (!isIPv6(ip.split('%')[0]!)) return ip
  const groups = expandIPv6(ip.split('%')[0]!)
  return groups ? `${groups.slice(0, 4).join(':')}::/64` : ip
}

/** The eight 16-bit groups of an IPv6 address, lower-case hex without leading zeros. */
function expandIPv6(address: string): string[] | null {
  let text = address.toLowerCase()
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number]
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const left = head ? head.split(':') : []
  const right = tail ? tail.split(':') : []
  const fill = tail === undefined ? 0 : 8 - left.length - right.length
  const groups = [...left, ...Array<string>(fill).fill('0'), ...right]
  if (groups.length !== 8) return null
  return groups.map((g) => parseInt(g || '0', 16).toString(16))
}
