import mqtt, { type MqttClient } from 'mqtt'
import { SOURCE } from './bridge.ts'
import { until } from './wait.ts'

const TICK_MS = 10
const RESEND_MS = 100

/**
 * A publisher of QoS 1 messages numbered 0, 1, 2… at a steady rate. It lists every gateway and
 * moves to the next when its connection drops; with a persistent session and a fixed client id,
 * MQTT.js sends every unacknowledged PUBLISH again on reconnect. `acked` holds the numbers a
 * gateway acknowledged: those the gateway promised to deliver.
 */
export interface Publisher {
  id: string
  issued: number
  acked: Set<number>
  /** Longest time without a PUBACK while sending. */
  maxAckGapMs: number
  reconnects: number
  /** Publishes MQTT.js failed (and that were sent again). */
  failedPublishes: number
  /** The numbers sent but not acknowledged. */
  unacked(): number[]
  /** One line on its state: connected, counts, the unacknowledged numbers. */
  describe(): string
  /** Stop sending new messages; wait up to `drainMs` for acknowledgements of those sent. */
  stop(drainMs: number): Promise<void>
  close(): Promise<void>
}

export function startPublisher({
  id,
  tag,
  gatewayUrls,
  ratePerSec,
}: {
  id: string
  tag: string
  gatewayUrls: string[]
  ratePerSec: number
}): Publisher {
  const servers = gatewayUrls.map((u) => {
    const url = new URL(u)
    return { host: url.hostname, port: Number(url.port) }
  })
  const client: MqttClient = mqtt.connect({
    servers,
    protocolVersion: 4,
    clientId: `chaos-${tag}-${id}`,
    clean: false,
    reconnectPeriod: 250,
    connectTimeout: 3_000,
    keepalive: 10,
  })
  client.on('error', () => {}) // refused connects while a gateway is down: it tries the next
  const topic = `${SOURCE}/${tag}/${id}`
  const startedAt = Date.now()
  let lastAck = startedAt
  let trace = (seq: number) => String(seq)
  let closed = false
  const pub: Publisher = {
    id,
    issued: 0,
    acked: new Set(),
    maxAckGapMs: 0,
    reconnects: 0,
    failedPublishes: 0,
    async stop(drainMs) {
      clearInterval(timer)
      await until(() => pub.acked.size === pub.issued, {
        timeoutMs: drainMs,
        what: `${id}'s acknowledgements`,
      }).catch(() => {}) // what stays unacknowledged is reported, not thrown
    },
    close: () => {
      closed = true
      return client.endAsync(true).catch(() => {})
    },
    unacked() {
      const missing: number[] = []
      for (let seq = 0; seq < pub.issued; seq++) if (!pub.acked.has(seq)) missing.push(seq)
      return missing
    },
    describe() {
      const missing = pub.unacked()
      const range = missing.length ? ` (${missing[0]}..${missing.at(-1)})` : ''
      const traced = missing.length ? `; ${missing.slice(0, 4).map(trace).join('; ')}` : ''
      return `${id}: issued ${pub.issued}, acked ${pub.acked.size}, unacked ${missing.length}${range}, reconnects ${pub.reconnects}, failed publishes ${pub.failedPublishes}, ${client.connected ? 'connected' : 'not connected'}${traced}`
    },
  }
  // MQTT.js fails a publish made while it resends its store, if that connection drops too
  // ('Connection closed'): the message is not kept, so it is sent again here, as an application would.
  const send = (seq: number) =>
    client.publish(topic, `${seq}:${Date.now()}`, { qos: 1 }, (err) => {
      if (err) {
        pub.failedPublishes++
        if (!closed) setTimeout(() => send(seq), RESEND_MS)
        return
      }
      const now = Date.now()
      pub.maxAckGapMs = Math.max(pub.maxAckGapMs, now - lastAck)
      lastAck = now
      pub.acked.add(seq)
    })
  client.on('reconnect', () => pub.reconnects++)
  // A wire trace of what stays unacknowledged: on which connection each copy went, with which id.
  let conn = 0
  const sends = new Map<number, string[]>()
  const pubacks = new Set<string>()
  client.on('connect', () => conn++)
  client.on('packetsend', (p) => {
    if (p.cmd !== 'publish') return
    const seq = Number(String(p.payload).split(':')[0])
    const list = sends.get(seq) ?? []
    list.push(`c${conn}#${p.messageId}${p.dup ? 'd' : ''}`)
    sends.set(seq, list)
  })
  client.on('packetreceive', (p) => {
    if (p.cmd === 'puback') pubacks.add(`c${conn}#${p.messageId}`)
  })
  trace = (seq) =>
    `${seq}: ${(sends.get(seq) ?? ['never sent']).map((s) => (pubacks.has(s.replace(/d$/, '')) ? `${s}(acked)` : s)).join(' ')}`
  const timer = setInterval(() => {
    // As many as the rate asks for since the start: a late timer catches up.
    const due = Math.floor(((Date.now() - startedAt) * ratePerSec) / 1_000)
    while (pub.issued < due) send(pub.issued++)
  }, TICK_MS)
  return pub
}
