/**
 * Packets as bytes for KV values (retained messages, wills, queued QoS 1/2 messages), and the
 * mq frame of gateways older than frame.ts (still read). A value is a 2-byte big-endian length,
 * that many bytes of JSON metadata, then the raw payload: cheaper than NATS headers, and the
 * payload is never base64-inflated.
 */
export interface WirePacket {
  cmd: 'publish'
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
  dup?: boolean
  /** aedes dedupe key: origin broker and its per-broker counter. */
  brokerId?: string
  brokerCounter?: number
  /** The publishing client (used for no-local in `authorizeForward`). */
  clientId?: string
  messageId?: number
}

interface Meta {
  t: string
  q: 0 | 1 | 2
  r?: 1
  d?: 1
  b?: string
  c?: number
  i?: string
  m?: number
  /** Extra fields a caller wants to keep beside the packet (queue order, will claims). */
  x?: Record<string, unknown>
}

const MAX_META_BYTES = 65_535 // the length prefix is 16 bits
const EMPTY = new Uint8Array(0)

export function encodePacket(p: WirePacket, extra?: Record<string, unknown>): Uint8Array {
  const meta: Meta = { t: p.topic, q: p.qos }
  if (p.retain) meta.r = 1
  if (p.dup) meta.d = 1
  if (p.brokerId !== undefined) meta.b = p.brokerId
  if (p.brokerCounter !== undefined) meta.c = p.brokerCounter
  if (p.clientId !== undefined) meta.i = p.clientId
  if (p.messageId !== undefined) meta.m = p.messageId
  if (extra !== undefined) meta.x = extra
  // Written straight into the value: this runs once per queued message, and a buffer for the
  // JSON and a view of the payload to copy from were two allocations and a copy more.
  const head = JSON.stringify(meta)
  const headBytes = Buffer.byteLength(head)
  if (headBytes > MAX_META_BYTES) throw new Error('packet metadata too long to encode')
  const payload: Uint8Array = p.payload ?? EMPTY
  const out = Buffer.allocUnsafe(2 + headBytes + payload.byteLength)
  out.writeUInt16BE(headBytes, 0)
  out.write(head, 2, 'utf8')
  out.set(payload, 2 + headBytes)
  return out
}

export function decodePacket(data: Uint8Array): {
  packet: WirePacket
  extra?: Record<string, unknown>
} {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const len = buf.readUInt16BE(0)
  const meta = JSON.parse(buf.toString('utf8', 2, 2 + len)) as Meta
  const packet: WirePacket = {
    cmd: 'publish',
    topic: meta.t,
    // A view, not a copy: the bus hands every receiver its own buffer.
    payload: buf.subarray(2 + len),
    qos: meta.q,
    retain: meta.r === 1,
  }
  if (meta.d === 1) packet.dup = true
  if (meta.b !== undefined) packet.brokerId = meta.b
  if (meta.c !== undefined) packet.brokerCounter = meta.c
  if (meta.i !== undefined) packet.clientId = meta.i
  if (meta.m !== undefined) packet.messageId = meta.m
  return meta.x === undefined ? { packet } : { packet, extra: meta.x }
}

/**
 * KV keys allow only `[-/=._A-Za-z0-9]`, so each topic level (or client id) becomes one token
 * `b<base64url>`; the `b` keeps empty levels from making empty tokens (ARCHITECTURE.md §13).
 */
export function keyToken(s: string): string {
  let token = tokenCache.get(s)
  if (token === undefined) {
    token = 'b' + Buffer.from(s, 'utf8').toString('base64url')
    if (tokenCache.size >= TOKEN_CACHE_SIZE) tokenCache.clear()
    tokenCache.set(s, token)
  }
  return token
}

// Every queued message names its session and its origin gateway by token, twice per message:
// encoding them each time was 4.5 % of a gateway's CPU on the full bridge path.
const TOKEN_CACHE_SIZE = 10_000
const tokenCache = new Map<string, string>()

export function fromKeyToken(token: string): string {
  return Buffer.from(token.slice(1), 'base64url').toString('utf8')
}

export function topicKey(topic: string): string {
  return topic.split('/').map(keyToken).join('.')
}

export function keyTopic(key: string): string {
  return key.split('.').map(fromKeyToken).join('/')
}
