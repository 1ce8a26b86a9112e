import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { nodeTlsOptions } from '../contracts/node-tls.ts'
import { generate } from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import type { TlsOptions } from '../contracts/store.ts'
import { createWireReader, createWireWriter } from './wire.ts'

/**
 * A small MQTT 3.1.1 client over TCP or TLS, for both ends of a link. MQTT.js cannot do what the
 * local side needs (PLUG-POINTS §1.5, §6): it cannot send protocol level 0x84 (bridge mode:
 * no-local and retain-as-published on aedes), and it sends a QoS 1 PUBACK only when its handler
 * returns, one message at a time. Here the caller acknowledges each message itself, in order,
 * once the upstream acknowledged it, while many messages are in flight. On the upstream side it
 * replaces MQTT.js for mqtt:// and mqtts:// because it is leaner per message (no outgoing store,
 * one buffer per PUBLISH); ws:// and wss:// still go through MQTT.js.
 */
export interface LocalMessage {
  topic: string
  payload: Buffer
  qos: 0 | 1
  retain: boolean
  /** Present for QoS 1: pass to `ack`. */
  messageId?: number
}

export interface LocalSession {
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

export interface ConnectLocalOptions {
  url: string
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
  /** The session is passed along: a message can arrive before the connect promise resolves. */
  onMessage?: (msg: LocalMessage, session: LocalSession) => void
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

const DEFAULT_KEEPALIVE_SEC = 30
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000 // 10 s

export function connectLocal(options: ConnectLocalOptions): Promise<LocalSession> {
  const {
    url,
    clientId,
    username,
    password,
    clean,
    bridgeMode = true,
    keepaliveSec = DEFAULT_KEEPALIVE_SEC,
    connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS,
    tls,
    peerName = 'local gateway',
    onMessage = () => {},
    onClose,
  } = options
  const u = new URL(url)
  const secure = u.protocol === 'mqtts:'
  const port = Number(u.port || (secure ? 8883 : 1883))
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') // IPv6 literals without brackets
  const socket: Socket = secure
    ? tlsConnect({
        host,
        port,
        servername: host, // SNI by default; tls.servername, when set, overrides it
        ...nodeTlsOptions(tls ?? {}),
      })
    : netConnect({ host, port })
  socket.setNoDelay(true)

  let nextId = 1
  const pending = new Map<number, () => void>()
  const publishing = new Map<number, (err?: Error) => void>()
  let connected = false
  let closing = false
  let ended = false
  let lastInbound = Date.now()
  let pinger: NodeJS.Timeout | undefined
  let current: LocalSession | undefined

  // Writes made in one turn of the event loop leave in one write (one syscall): the PUBACKs
  // released by every upstream read of this turn cost one write, not one each (wire.ts).
  const out = createWireWriter(socket)
  const send = (packet: Packet) => out.raw(generate(packet, { protocolVersion: 4 }))
  // Packet ids are shared by SUBSCRIBE, UNSUBSCRIBE and PUBLISH and must not be reused while in
  // flight [MQTT-2.3.1-2]; the window keeps far fewer than 65,535 in flight.
  const newId = () => {
    let id = nextId
    while (pending.has(id) || publishing.has(id)) id = id === 65_535 ? 1 : id + 1
    nextId = id === 65_535 ? 1 : id + 1
    return id
  }

  return new Promise<LocalSession>((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new Error(`${peerName} did not answer CONNECT within ${connectTimeoutMs} ms`)),
      connectTimeoutMs
    )

    function fail(err: Error) {
      if (ended) return
      ended = true
      clearTimeout(timer)
      clearInterval(pinger)
      socket.destroy()
      for (const done of pending.values()) done()
      pending.clear()
      for (const done of publishing.values()) done(err)
      publishing.clear()
      if (!connected) reject(err)
      else if (!closing) onClose(err)
    }

    socket.on('error', (err) => fail(err))
    socket.on('close', () => fail(new Error(`${peerName} closed the connection`)))
    const read = createWireReader({
      connack: (sessionPresent, returnCode) => onConnack(sessionPresent, returnCode),
      publish: (topic, payload, qos, retain, messageId) => {
        // We subscribe at QoS 1, so the gateway never sends QoS 2 [MQTT-3.8.4-6]; treat it as 1.
        const msg: LocalMessage =
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

    function onConnack(sessionPresent: boolean, returnCode: number) {
      if (connected) return
      clearTimeout(timer)
      if (returnCode !== 0) return fail(new ConnackError(returnCode, peerName))
      connected = true
      // Ping at half the keepalive; a gateway silent for 1.5× keepalive is gone [MQTT-3.1.2-24].
      pinger = setInterval(() => {
        if (Date.now() - lastInbound > keepaliveSec * 1_500) {
          return fail(new Error(`${peerName} stopped answering pings`))
        }
        send({ cmd: 'pingreq' })
      }, keepaliveSec * 500)
      pinger.unref()
      current = session(sessionPresent)
      resolve(current)
    }

    const request = (packet: Packet & { messageId?: number }): Promise<void> =>
      new Promise((res, rej) => {
        if (ended) return rej(new Error('local connection is closed'))
        const id = newId()
        packet.messageId = id
        pending.set(id, () => (ended ? rej(new Error('local connection closed')) : res()))
        send(packet)
      })

    function session(sessionPresent: boolean): LocalSession {
      return {
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
            socket.once('close', () => res())
            send({ cmd: 'disconnect' })
            out.flush()
            socket.end()
            // A gateway that never closes its side must not hold us up.
            setTimeout(() => socket.destroy(), 1_000).unref()
          }),
      }
    }

    socket.once('connect', () => {
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
      }
      send(connect as Packet)
    })
  })
}
