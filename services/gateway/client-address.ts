/**
 * Who is really on the other end of an MQTT connection. Without `trustProxy` that is the
 * socket's peer. With it, the listener reads the client's address from the PROXY protocol header
 * (TCP, TLS) or the last `X-Forwarded-For` entry (WebSocket) and records it here; a connection
 * that came without one has no known address, so it is never taken for loopback.
 */
import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import type { Duplex } from 'node:stream'

/** Addresses the listeners decided (undefined = unknown), by connection. */
const decided = new WeakMap<Duplex, string | undefined>()

/** Record what the listener learnt of `conn`'s client (undefined: nothing it may trust). */
export function recordClientAddress(conn: Duplex, address: string | undefined): void {
  decided.set(conn, address)
}

/** The client's address as the authentication decision should see it, normalized. */
export function clientAddressOf(conn: Duplex, req?: IncomingMessage): string | undefined {
  if (decided.has(conn)) return decided.get(conn)
  const peer = (conn as { remoteAddress?: string }).remoteAddress ?? req?.socket?.remoteAddress
  return normalizeIp(peer)
}

/**
 * The client an `X-Forwarded-For` header names: its last entry, the one our own reverse proxy
 * appended (earlier ones are the client's claim). Not an IP address: unknown.
 */
export function forwardedFor(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header.at(-1) : header
  let last = value?.split(',').pop()?.trim()
  if (!last) return undefined
  // Some proxies add a port: `203.0.113.7:5124` or `[2001:db8::1]:5124`.
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(last)
  if (bracketed) last = bracketed[1]!
  else if (/^[\d.]+:\d+$/.test(last)) last = last.slice(0, last.lastIndexOf(':'))
  return normalizeIp(last)
}

/**
 * One spelling per address: IPv6 compressed and lower case, an IPv4-mapped IPv6 address as the
 * IPv4 one (so `::ffff:7f00:1` is loopback too). Anything that is not an IP: undefined.
 */
export function normalizeIp(address: string | undefined): string | undefined {
  if (!address) return undefined
  const family = isIP(address)
  if (family === 4) return address
  if (family !== 6) return undefined
  const groups = expandIpv6(address)
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return [groups[6]! >> 8, groups[6]! & 255, groups[7]! >> 8, groups[7]! & 255].join('.')
  }
  return new URL(`http://[${address}]/`).hostname.slice(1, -1)
}

export function isLoopback(address: string | undefined): boolean {
  const ip = normalizeIp(address)
  return ip !== undefined && (ip === '::1' || ip.startsWith('127.'))
}

/**
 * The key a source is limited by: an IPv4 address, or an IPv6 address's /64 (one host or one
 * customer usually holds a whole /64, so per-address limits would be no limit at all).
 */
export function sourceKey(address: string | undefined): string {
  const ip = normalizeIp(address)
  if (ip === undefined) return 'unknown'
  if (isIP(ip) === 4) return ip
  return `${expandIpv6(ip)
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`
}

/** The eight 16-bit groups of a valid IPv6 address (an embedded IPv4 tail included). */
function expandIpv6(address: string): number[] {
  let text = address.split('%')[0]!
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (v4) {
    const [a, b, c, d] = v4[1]!.split('.').map(Number)
    text = `${text.slice(0, -v4[1]!.length)}${((a! << 8) | b!).toString(16)}:${((c! << 8) | d!).toString(16)}`
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const parse = (s: string) => (s ? s.split(':').map((g) => parseInt(g, 16)) : [])
  const left = parse(head)
  if (tail === undefined) return left
  const right = parse(tail)
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
}
