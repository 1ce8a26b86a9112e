import type { Duplex } from 'node:stream'
import { generate } from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import type { TlsOptions } from '../contracts/store.ts'
import { openSocket, type LocalDialer } from './dial.ts'
import { createWireReader, createWireWriter, type WireWriter } from './wire.ts'

/**
 * A small MQTT 3.1.1 client over TCP or TLS, for both ends of a link. MQTT.js cannot do what the
 * local side needs (ARCHITECTURE.md §13): it cannot send protocol level 0x84 (bridge mode:
 * no-local and retain-as-published on aedes), and it sends a QoS 1 PUBACK only when its handler
 * returns, one message at a time. Here the caller acknowledges each message itself, in order,
 * once the upstream acknowledged it, while many messages are in flight. On the upstream side it
 * replaces MQTT.js for mqtt:// and mqtts:// because it is leaner per message (no outgoing store,
 * one buffer per PUBLISH); ws:// and wss:// still go through MQTT.js.
 */
export interface MqttMessage {
  topic: string
  payload: Buffer
  qos: 0 | 1
  retain: boolean
  /** Present for QoS 1: pass to `ack`. */
  messageId?: number
}

export interface MqttSession {
  readonly sessionPresent: boolean
  subscribe(filters: readonly string[]): Promise<void>
  unsubscribe(filters: readonly string[]): Promise<void>
  /** PUBACK. MQTT requires them in the order the PUBLISHes arrived [MQTT-4.6.0-2]. */
  ack(messageId: number): void
  /** `done` fires on PUBACK for QoS 1, at once for QoS 0, with an error if the link ends first. */
  publish(
    topic: string,
    payload: Buffer,
    opts: { qos: 0 | 1; retain: boolean },
    done: (err?: Error) => void
  ): void
  /** Stop reading the socket (TCP backpressure on the gateway) and go on. */
  pause(): void
  resume(): void
  close(): Promise<void>
}

export interface MqttSessionOptions {
  url: string
  /** A connection without a socket (the gateway in this process); `url` is then not dialled. */
  dial?: LocalDialer
  clientId: string
  username?: string
  password?: string
  /** false: a persistent session, so what arrives while the bridge is down waits for it. */
  clean: boolean
  /** Protocol level 0x84: the broker does not echo our own publishes and keeps retain flags. */
  bridgeMode?: boolean
  keepaliveSec?: number
  connectTimeoutMs?: number
  /** For mqtts:// URLs. */
  tls?: TlsOptions | null
  /** Who is on the other end, for error messages. */
  peerName?: string
  /** Published by the broker if the connection ends without a DISCONNECT. */
  will?: { topic: string; payload: Buffer; qos: 0 | 1; retain: boolean }
  /** The session is passed along: a message can arrive before the connect promise resolves. */
  onMessage?: (msg: MqttMessage, session: MqttSession) => void
  /** Called once, when the connection ends after a successful connect (not after close()). */
  onClose: (err: Error) => void
}

const CONNACK_REASONS: Record<number, string> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
}

export class ConnackError extends Error {
  readonly returnCode: number
  constructor(returnCode: number, peerName: string) {
    const reason = CONNACK_REASONS[returnCode] ?? 'refused'
    super(`${peerName} refused the connection: ${reason} (CONNACK ${returnCode})`)
    this.name = 'ConnackError'
    this.returnCode = returnCode
  }
  /** CONNACK 4 or 5: the credential was rejected or revoked; retrying cannot help. */
  get fatal(): boolean {
    return this.returnCode === 4 || this.returnCode === 5
  }
}

// 10 s: a link cut silently (a partition: no reset, no FIN) is given up after 15 s and dialled
// again, so it resumes within seconds of the heal; at 30 s a 30 s partition went unnoticed and
// delivery waited on TCP's retransmission back-off (22.7 s after the heal, npm run chaos).
export const DEFAULT_KEEPALIVE_SEC = 10
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000 // 10 s
const LAST_PACKET_ID = 65_535 // packet ids are 16 bit, 0 is not one [MQTT-2.3.1-1]
const CLOSE_GRACE_MS = 1_000 // 1 s for the peer to close its side after our DISCONNECT

/**
 * Connect and hand back the session once the broker accepted it: open the socket, send CONNECT,
 * wait for CONNACK (at most `connectTimeoutMs`), then keep the connection alive with pings.
 */
export function connectMqttSession(options: MqttSessionOptions): Promise<MqttSession> {
  const {
    keepaliveSec = DEFAULT_KEEPALIVE_SEC,
    connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS,
    peerName = 'local gateway',
    onMessage = () => {},
    onClose,
  } = options
  const socket = options.dial ? options.dial() : openSocket(options.url, options.tls)

  return new Promise<MqttSession>((resolve, reject) => {
    let connected = false
    let pinger: NodeJS.Timeout | undefined
    const timer = setTimeout(
      () =>
        conn.fail(new Error(`${peerName} did not answer CONNECT within ${connectTimeoutMs} ms`)),
      connectTimeoutMs
    )
    const conn = openConnection({
      socket,
      peerName,
      onMessage,
      onConnack(sessionPresent, returnCode) {
        if (connected) return
        clearTimeout(timer)
        if (returnCode !== 0) return conn.fail(new ConnackError(returnCode, peerName))
        connected = true
        pinger = startPinger({ keepaliveSec, peerName, conn })
        resolve(conn.session(sessionPresent))
      },
      onEnd(err, closing) {
        clearTimeout(timer)
        clearInterval(pinger)
        if (!connected) reject(err)
        else if (!closing) onClose(err)
      },
    })
    const hello = () => conn.send(connectPacket({ ...options, keepaliveSec }))
    if (options.dial)
      hello() // in-process: connected already
    else socket.once('connect', hello)
  })
}

/**
 * Connect with a clean session and leave: the broker discards the session and its queue
 * [MQTT-3.1.2-6].
 */
export async function discardSession(
  options: Pick<MqttSessionOptions, 'url' | 'dial' | 'clientId' | 'username' | 'password'>
): Promise<void> {
  const session = await connectMqttSession({
    ...options,
    clean: true,
    onMessage: () => {},
    onClose: () => {},
  })
  await session.close()
}

/** `discardSession` on the first of `urls` that answers: the session is the whole cluster's. */
export async function discardOnAny(
  urls: readonly string[],
  options: Pick<MqttSessionOptions, 'dial' | 'clientId' | 'username' | 'password'>
): Promise<void> {
  if (options.dial) return discardSession({ ...options, url: 'in-process' })
  let last: unknown = new Error('no local gateway configured')
  for (const url of urls) {
    try {
      return await discardSession({ ...options, url })
    } catch (err) {
      last = err
    }
  }
  throw last
}

function connectPacket({
  clientId,
  clean,
  keepaliveSec,
  bridgeMode = true,
  username,
  password,
  will,
}: MqttSessionOptions & { keepaliveSec: number }): Packet {
  const connect = {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clientId,
    clean,
    keepalive: keepaliveSec,
    bridgeMode, // mqtt-packet adds 0x80 to the level: 0x84 (not in its type declarations)
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password: Buffer.from(password) }),
    ...(will === undefined ? {} : { will }),
  }
  return connect as Packet
}

/** Ping at half the keepalive; a peer silent for 1.5× keepalive is gone [MQTT-3.1.2-24]. */
function startPinger({
  keepaliveSec,
  peerName,
  conn,
}: {
  keepaliveSec: number
  peerName: string
  conn: Connection
}): NodeJS.Timeout {
  const silentMs = keepaliveSec * 1_500 // 1.5 × keepalive, in ms
  const pinger = setInterval(() => {
    if (Date.now() - conn.lastInbound() > silentMs) {
      return conn.fail(new Error(`${peerName} stopped answering pings`))
    }
    conn.send({ cmd: 'pingreq' })
  }, keepaliveSec * 500) // half the keepalive, in ms
  pinger.unref()
  return pinger
}

/**
 * Packet ids are shared by SUBSCRIBE, UNSUBSCRIBE and PUBLISH and must not be reused while in
 * flight [MQTT-2.3.1-2]; the window keeps far fewer than 65,535 in flight.
 */
function createPacketIds(
  pending: ReadonlyMap<number, unknown>,
  publishing: ReadonlyMap<number, unknown>
): () => number {
  let nextId = 1
  return () => {
    let id = nextId
    while (pending.has(id) || publishing.has(id)) id = id === LAST_PACKET_ID ? 1 : id + 1
    nextId = id === LAST_PACKET_ID ? 1 : id + 1
    return id
  }
}

/** One connection's packets, from its first byte to its end; the handshake is the caller's. */
interface Connection {
  send(packet: Packet): void
  /** End it: the socket goes, requests and publishes in flight fail, then `onEnd`. Once. */
  fail(err: Error): void
  /** The session, once CONNACK accepted it: messages are delivered from then on. */
  session(sessionPresent: boolean): MqttSession
  /** When the peer last sent anything, ms since the epoch. */
  lastInbound(): number
}

function openConnection({
  socket,
  peerName,
  onMessage,
  onConnack,
  onEnd,
}: {
  socket: Duplex
  peerName: string
  onMessage: (msg: MqttMessage, session: MqttSession) => void
  onConnack: (sessionPresent: boolean, returnCode: number) => void
  /** `closing`: the end was asked for (close()). */
  onEnd: (err: Error, closing: boolean) => void
}): Connection {
  const pending = new Map<number, () => void>() // SUBSCRIBE, UNSUBSCRIBE
  const publishing = new Map<number, (err?: Error) => void>() // QoS 1 PUBLISH
  const newId = createPacketIds(pending, publishing)
  let closing = false
  let ended = false
  let lastInbound = Date.now()
  let current: MqttSession | undefined

  // Writes made in one turn of the event loop leave in one write (one syscall): the PUBACKs
  // released by every upstream read of this turn cost one write, not one each (wire.ts).
  const out = createWireWriter(socket)
  const send = (packet: Packet) => out.raw(generate(packet, { protocolVersion: 4 }))

  function fail(err: Error) {
    if (ended) return
    ended = true
    socket.destroy()
    for (const done of pending.values()) done()
    pending.clear()
    for (const done of publishing.values()) done(err)
    publishing.clear()
    onEnd(err, closing)
  }

  socket.on('error', (err) => fail(err))
  socket.on('close', () => fail(new Error(`${peerName} closed the connection`)))
  const read = createWireReader({
    connack: (sessionPresent, returnCode) => onConnack(sessionPresent, returnCode),
    publish: (topic, payload, qos, retain, messageId) => {
      // We subscribe at QoS 1, so the gateway never sends QoS 2 [MQTT-3.8.4-6]; treat it as 1.
      const msg: MqttMessage =
        qos === 0
          ? { topic, payload, qos: 0, retain }
          : { topic, payload, qos: 1, retain, messageId }
      if (current) onMessage(msg, current)
    },
    ack: (kind, id) => {
      const waiting = kind === 'puback' ? publishing : pending
      const done = waiting.get(id)
      if (!done) return
      waiting.delete(id)
      done()
    },
    error: (err) => fail(err),
  })
  socket.on('data', (chunk: Buffer) => {
    lastInbound = Date.now()
    read(chunk)
  })

  const request = (packet: Packet & { messageId?: number }): Promise<void> =>
    new Promise((res, rej) => {
      if (ended) return rej(new Error('local connection is closed'))
      const id = newId()
      packet.messageId = id
      pending.set(id, () => (ended ? rej(new Error('local connection closed')) : res()))
      send(packet)
    })

  function session(sessionPresent: boolean): MqttSession {
    current = {
      sessionPresent,
      subscribe: async (filters) => {
        if (filters.length === 0) return
        await request({
          cmd: 'subscribe',
          subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })),
        })
      },
      unsubscribe: async (filters) => {
        if (filters.length === 0) return
        await request({ cmd: 'unsubscribe', unsubscriptions: [...filters] })
      },
      ack: (messageId) => {
        if (!ended) out.puback(messageId)
      },
      publish: (topic, payload, { qos, retain }, done) => {
        if (ended) return done(new Error(`${peerName} connection is closed`))
        if (qos === 0) {
          out.publish(topic, payload, 0, retain, 0)
          return done()
        }
        const id = newId()
        publishing.set(id, done)
        out.publish(topic, payload, 1, retain, id)
      },
      pause: () => socket.pause(),
      resume: () => socket.resume(),
      close: () =>
        new Promise<void>((res) => {
          if (ended) return res()
          closing = true
          disconnect(socket, out, send, res)
        }),
    }
    return current
  }

  return { send, fail, session, lastInbound: () => lastInbound }
}

/** DISCONNECT, then end our side; `done` once the socket closed. */
function disconnect(
  socket: Duplex,
  out: WireWriter,
  send: (packet: Packet) => void,
  done: () => void
): void {
  socket.once('close', () => done())
  send({ cmd: 'disconnect' })
  out.flush()
  socket.end()
  // A peer that never closes its side must not hold us up.
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref()
}
