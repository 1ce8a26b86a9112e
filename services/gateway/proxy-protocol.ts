/**
 * The PROXY protocol (HAProxy's spec, versions 1 and 2): a header a TCP proxy sends before the
 * client's bytes, naming the client's address. Read only under `trustProxy`, on the TCP and TLS
 * listeners (before the TLS handshake, as the proxy passes TLS through).
 */
import { isIPv4, isIPv6, type Socket } from 'node:net'
import { normalizeIp } from './client-address.ts'

export type ProxyHeader =
  /** More bytes are needed to decide. */
  | { kind: 'incomplete' }
  /** The bytes do not start with a PROXY signature: plain MQTT, from no proxy. */
  | { kind: 'none' }
  /** A PROXY header that breaks the spec: the connection is closed. */
  | { kind: 'invalid'; reason: string }
  /**
   * A header of `length` bytes. `address` is the client's, or undefined when the proxy sent
   * none (v1 UNKNOWN, v2 LOCAL or UNSPEC/UNIX): unknown, so never loopback.
   */
  | { kind: 'proxied'; address: string | undefined; length: number }

const V1_PREFIX = Buffer.from('PROXY ')
const V1_MAX_BYTES = 107 // the spec's worst case, CRLF included
const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
])
const V2_FIXED_BYTES = 16
// Addresses take at most 216 bytes (AF_UNIX); the rest is TLVs (TLS details, unique ids). A
// proxy sends a few hundred bytes at most; a longer header is refused rather than buffered.
export const V2_MAX_BYTES = 4_096

/** Does `buf` start with (a prefix of) `sig`? */
function startsLike(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length)
  return buf.subarray(0, n).equals(sig.subarray(0, n))
}

export function parseProxyHeader(buf: Buffer): ProxyHeader {
  if (buf.length === 0) return { kind: 'incomplete' }
  if (startsLike(buf, V2_SIGNATURE)) return parseV2(buf)
  if (startsLike(buf, V1_PREFIX)) return parseV1(buf)
  return { kind: 'none' }
}

function parseV1(buf: Buffer): ProxyHeader {
  const end = buf.indexOf('\r\n')
  if (end === -1) {
    return buf.length >= V1_MAX_BYTES
      ? { kind: 'invalid', reason: 'v1 header without CRLF in 107 bytes' }
      : { kind: 'incomplete' }
  }
  if (end + 2 > V1_MAX_BYTES) return { kind: 'invalid', reason: 'v1 header over 107 bytes' }
  const length = end + 2
  const fields = buf.subarray(0, end).toString('latin1').split(' ')
  if (fields[1] === 'UNKNOWN') return { kind: 'proxied', address: undefined, length }
  const [, proto, src, dst, sport, dport] = fields
  const isAddress = proto === 'TCP4' ? isIPv4 : proto === 'TCP6' ? isIPv6 : undefined
  const port = (p: string | undefined) => p !== undefined && /^\d{1,5}$/.test(p) && +p < 65_536
  if (
    fields.length !== 6 ||
    !isAddress ||
    !isAddress(src!) ||
    !isAddress(dst!) ||
    !port(sport) ||
    !port(dport)
  ) {
    return { kind: 'invalid', reason: 'malformed v1 header' }
  }
  return { kind: 'proxied', address: normalizeIp(src), length }
}

function parseV2(buf: Buffer): ProxyHeader {
  if (buf.length < V2_FIXED_BYTES) return { kind: 'incomplete' }
  const verCmd = buf[12]!
  if (verCmd >> 4 !== 2) return { kind: 'invalid', reason: 'v2 header of another version' }
  const command = verCmd & 0x0f
  if (command > 1) return { kind: 'invalid', reason: 'v2 header with an unknown command' }
  const length = V2_FIXED_BYTES + buf.readUInt16BE(14)
  if (length > V2_MAX_BYTES) return { kind: 'invalid', reason: 'v2 header too long' }
  if (buf.length < length) return { kind: 'incomplete' }
  // LOCAL: the proxy speaking for itself (a health check); UNSPEC and UNIX name no IP.
  const family = buf[13]! >> 4
  if (command === 0 || family === 0 || family === 3) {
    return { kind: 'proxied', address: undefined, length }
  }
  const body = buf.subarray(V2_FIXED_BYTES, length)
  if (family === 1 && body.length >= 12) {
    return { kind: 'proxied', address: [...body.subarray(0, 4)].join('.'), length }
  }
  if (family === 2 && body.length >= 36) {
    const groups: string[] = []
    for (let i = 0; i < 16; i += 2) groups.push(body.readUInt16BE(i).toString(16))
    return { kind: 'proxied', address: normalizeIp(groups.join(':')), length }
  }
  return { kind: 'invalid', reason: 'v2 header with an unknown family or a short address' }
}

export type ReadHeaderResult =
  { ok: true; proxied: boolean; address: string | undefined } | { ok: false; reason: string }

/**
 * Read a PROXY header off `socket` (paused mode), and put back whatever followed it, so the
 * next reader (aedes, or the TLS layer) starts at the client's first byte. No header: the
 * bytes are all put back. Gives up after `timeoutMs` without a whole header.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ReadHeaderResult> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0)
    const finish = (result: ReadHeaderResult, rest?: Buffer) => {
      clearTimeout(timer)
      socket.off('readable', onReadable)
      socket.off('close', onClose)
      if (rest?.length) socket.unshift(rest)
      resolve(result)
    }
    const onClose = () => finish({ ok: false, reason: 'closed before a PROXY header' })
    const onReadable = () => {
      for (let chunk: Buffer | null; (chunk = socket.read() as Buffer | null) !== null;) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
        const header = parseProxyHeader(buf)
        if (header.kind === 'incomplete') continue
        if (header.kind === 'invalid') return finish({ ok: false, reason: header.reason })
        if (header.kind === 'none')
          return finish({ ok: true, proxied: false, address: undefined }, buf)
        return finish(
          { ok: true, proxied: true, address: header.address },
          buf.subarray(header.length)
        )
      }
    }
    const timer = setTimeout(
      () => finish({ ok: false, reason: `no PROXY header within ${timeoutMs} ms` }),
      timeoutMs
    )
    socket.on('readable', onReadable)
    socket.once('close', onClose)
  })
}
