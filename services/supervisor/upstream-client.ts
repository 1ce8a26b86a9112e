import { connect, type IClientOptions, type MqttClient } from 'mqtt'
import { HOST_PROTOCOLS, type TlsOptions } from '../contracts/store.ts'
import { nodeTlsOptions } from '../contracts/node-tls.ts'
import {
  ConnackError,
  connectMqttSession,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_SEC,
  type MqttMessage,
  type MqttSession,
} from './mqtt-session.ts'

/**
 * The bridge's side on the upstream broker: our lean client for mqtt:// and mqtts://, MQTT.js
 * for ws:// and wss://. It only publishes, so it needs no session of its own (clean = true):
 * what was in flight when the link broke is still unacknowledged on the local side and comes
 * again from there.
 */
export interface UpstreamTarget {
  /** `mqtt://host`, `mqtts://host`, `ws://host[/path]`, `wss://host[/path]` */
  host: string
  brokerPort: number
  tls?: TlsOptions | null
}

/** All the bridge asks of its upstream end, whichever client serves it. */
/** Publishing up; and, for bindings coming in, subscribing and acknowledging what comes down. */
export type UpstreamSession = Pick<
  MqttSession,
  'publish' | 'close' | 'subscribe' | 'unsubscribe' | 'ack' | 'pause' | 'resume'
>

/** What a link with bindings coming in (`in`, `both`) asks of its upstream connection. */
export interface InboundOptions {
  /** Each message from upstream; acknowledged with `ack` once the local gateway has it. */
  onMessage: (msg: MqttMessage, session?: UpstreamSession) => void
}

export class UpstreamRefusedError extends Error {
  readonly returnCode: number
  constructor(returnCode: number, message: string) {
    super(message)
    this.name = 'UpstreamRefusedError'
    this.returnCode = returnCode
  }
  /** CONNACK 4 (bad user name or password) or 5 (not authorized): the credential is gone. */
  get fatal(): boolean {
    return this.returnCode === 4 || this.returnCode === 5
  }
}

const KEEPALIVE_SEC = DEFAULT_KEEPALIVE_SEC
const CLOSE_GRACE_MS = 1_000 // 1 s for what is in flight when we close

export function upstreamUrl({ host, brokerPort }: UpstreamTarget): string {
  const u = new URL(host.includes('://') ? host : `mqtt://${host}`)
  if (!(HOST_PROTOCOLS as readonly string[]).includes(u.protocol)) {
    throw new Error(`unsupported upstream protocol ${u.protocol} (mqtt, mqtts, ws or wss)`)
  }
  u.port = String(brokerPort)
  return u.toString().replace(/\/$/, '')
}

export async function connectUpstream(
  options: Parameters<typeof connectUpstreamMqttJs>[0]
): Promise<UpstreamSession> {
  const url = upstreamUrl(options.target)
  if (!url.startsWith('mqtt')) return connectUpstreamMqttJs(options)
  try {
    const { inbound } = options
    const session = await connectMqttSession({
      url,
      clientId: options.clientId,
      // Coming in, the upstream keeps what it queued for the link while the link is down, and a
      // bridge never gets back what it published itself (Mosquitto and our gateways honour the
      // bridge flag as no-local).
      clean: !inbound,
      bridgeMode: !!inbound,
      ...(inbound
        ? { onMessage: (msg: MqttMessage, s: MqttSession) => inbound.onMessage(msg, s) }
        : {}),
      keepaliveSec: KEEPALIVE_SEC,
      peerName: 'upstream',
      tls: options.target.tls ?? null,
      ...(options.username ? { username: options.username } : {}),
      ...(options.password ? { password: options.password } : {}),
      ...(options.connectTimeoutMs === undefined
        ? {}
        : { connectTimeoutMs: options.connectTimeoutMs }),
      onClose: options.onClose,
    })
    return session
  } catch (err) {
    if (err instanceof ConnackError) throw new UpstreamRefusedError(err.returnCode, err.message)
    throw err
  }
}

function connectUpstreamMqttJs({
  target,
  clientId,
  username,
  password,
  connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS,
  onClose,
  inbound,
}: {
  target: UpstreamTarget
  clientId: string
  username?: string | null
  password?: string | null
  connectTimeoutMs?: number
  /** Called once when an established link ends (not after close()). */
  onClose: (err: Error) => void
  inbound?: InboundOptions
}): Promise<UpstreamSession> {
  const tls = target.tls ?? {}
  const options: IClientOptions = {
    clientId,
    protocolVersion: 4,
    clean: !inbound,
    keepalive: KEEPALIVE_SEC,
    connectTimeout: connectTimeoutMs,
    // The supervisor's machine owns reconnects: backoff with jitter, and a stop on a revoked
    // credential. MQTT.js's own reconnect has no jitter and retries forever.
    reconnectPeriod: 0,
    // Never buffer QoS 0 while offline: unbounded memory (ARCHITECTURE.md §13).
    queueQoSZero: false,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...nodeTlsOptions(tls),
  }
  return new Promise((resolve, reject) => {
    let client: MqttClient
    try {
      client = connect(upstreamUrl(target), options)
    } catch (err) {
      return reject(err)
    }
    let up = false
    let closing = false
    let ended = false
    const end = (err: Error) => {
      if (ended) return
      ended = true
      client.end(true)
      if (!up) reject(err)
      else if (!closing) onClose(err)
    }
    client.on('error', (err: Error & { code?: unknown }) => {
      const rc = typeof err.code === 'number' ? err.code : undefined
      end(rc === undefined ? err : new UpstreamRefusedError(rc, err.message))
    })
    client.on('close', () => end(new Error('upstream closed the connection')))
    client.on('offline', () => end(new Error('upstream went offline')))
    // As on the local side: everything published in one turn of the event loop goes out in one
    // writev. MQTT.js corks each packet only until the next tick.
    let corked = false
    const uncork = () => {
      corked = false
      client.stream?.uncork()
    }
    if (inbound) acknowledgeLater(client, inbound)
    client.once('connect', () => {
      up = true
      // MQTT.js leaves Nagle on; a lone QoS 0 message would wait for the peer's delayed ACK.
      ;(client.stream as { setNoDelay?: (on: boolean) => void } | undefined)?.setNoDelay?.(true)
      resolve({
        publish(topic, payload, opts, done) {
          if (ended) return done(new Error('upstream link is closed'))
          if (!corked && client.stream) {
            corked = true
            client.stream.cork()
            setImmediate(uncork)
          }
          client.publish(topic, payload, opts, (err) => done(err ?? undefined))
        },
        ...mqttJsInbound(client),
        close: () =>
          new Promise<void>((res) => {
            if (ended) return res()
            closing = true
            ended = true
            // Graceful: wait for what is in flight, but never longer than 1 s.
            const t = setTimeout(() => client.end(true, () => res()), CLOSE_GRACE_MS)
            client.end(false, () => {
              clearTimeout(t)
              res()
            })
          }),
      })
    })
  })
}

/** PUBACK callbacks of messages from upstream, by packet id, until the local gateway has them. */
const pendingAcks = new WeakMap<MqttClient, Map<number, () => void>>()

/**
 * MQTT.js sends a PUBACK once `handleMessage` calls back: the callback is kept until `ack`, so
 * a message is acknowledged upstream only after the local gateway acknowledged it.
 */
function acknowledgeLater(client: MqttClient, { onMessage }: InboundOptions): void {
  const acks = new Map<number, () => void>()
  pendingAcks.set(client, acks)
  client.handleMessage = (packet, callback) => {
    const qos = packet.qos === 0 ? 0 : 1
    const messageId = qos === 1 ? packet.messageId : undefined
    if (messageId !== undefined) acks.set(messageId, () => callback())
    onMessage({
      topic: packet.topic,
      payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      qos,
      retain: packet.retain,
      ...(messageId === undefined ? {} : { messageId }),
    })
    if (messageId === undefined) callback()
  }
}

/** Subscribing, acknowledging and pausing on an MQTT.js connection (ws://, wss://). */
function mqttJsInbound(
  client: MqttClient
): Pick<UpstreamSession, 'subscribe' | 'unsubscribe' | 'ack' | 'pause' | 'resume'> {
  return {
    async subscribe(filters) {
      if (filters.length === 0) return
      const granted = await client.subscribeAsync(
        Object.fromEntries(filters.map((f) => [f, { qos: 1 as const }]))
      )
      const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic)
      if (refused.length)
        throw new Error(`upstream refused the subscription to ${refused.join(', ')}`)
    },
    async unsubscribe(filters) {
      if (filters.length) await client.unsubscribeAsync([...filters])
    },
    ack(messageId) {
      const acks = pendingAcks.get(client)
      acks?.get(messageId)?.()
      acks?.delete(messageId)
    },
    pause: () => client.stream?.pause(),
    resume: () => client.stream?.resume(),
  }
}
