import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { Registry } from 'prom-client'
import type { Bus } from '../../services/common/bus/bus.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'
import { createGateway, type Gateway, type GatewayOptions } from '../../services/gateway/index.ts'

export interface TestGateway extends Gateway {
  /** `mqtt://127.0.0.1:<port>` */
  url: string
  metrics: Registry
}

const TEST_HEARTBEAT_MS = 500 // 0.5 s: a dead gateway's wills fire within ~2–4 s in tests

/**
 * A gateway on 127.0.0.1, port 0, on the given bus. The store client defaults to one on the same
 * bus (serve `store.request.authenticate` there, or start the real store), the registry is
 * private, and logs are silent unless `log` is given.
 */
export async function startTestGateway({
  bus,
  ...options
}: Partial<GatewayOptions> & { bus: Bus }): Promise<TestGateway> {
  const metrics = options.metrics ?? new Registry()
  const gw = await createGateway({
    store: createStoreClient({ bus, timeoutMs: 2_000 }),
    log: silentLogger(),
    host: '127.0.0.1',
    mqttPort: 0,
    heartbeatMs: TEST_HEARTBEAT_MS,
    ...options,
    metrics,
    bus,
  })
  return Object.assign(gw, { url: `mqtt://127.0.0.1:${gw.ports.mqtt}`, metrics })
}

/**
 * Connect MQTT.js (3.1.1, no reconnect unless asked) and wait for CONNACK; rejects on refusal.
 * `setup` runs before CONNACK: attach `collect` there when a resumed session's queued messages
 * may arrive in the same read as the CONNACK.
 */
export async function connectMqtt(
  url: string,
  options: IClientOptions = {},
  setup?: (client: MqttClient) => void
): Promise<MqttClient> {
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...options,
  })
  setup?.(client)
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve())
      client.once('error', reject)
      client.once('close', () => reject(new Error('closed before CONNACK')))
    })
  } catch (err) {
    client.end(true)
    throw err
  }
  client.on('error', () => {}) // later errors show up as 'close'; tests assert on that
  return client
}

/** Collect messages on a client, with a waiter for "at least n". */
export function collect(client: MqttClient) {
  const messages: Array<{ topic: string; payload: string; retain: boolean; qos: number }> = []
  const waiters: Array<() => void> = []
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload: payload.toString(), retain: packet.retain, qos: packet.qos })
    for (const w of waiters.splice(0)) w()
  })
  return {
    messages,
    async waitFor(n: number, timeoutMs = 5_000): Promise<typeof messages> {
      const deadline = Date.now() + timeoutMs
      while (messages.length < n) {
        const left = deadline - Date.now()
        if (left <= 0) {
          const state = client.connected ? 'connected' : 'disconnected'
          throw new Error(`got ${messages.length} of ${n} messages (client ${state})`)
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, left)
          waiters.push(() => (clearTimeout(t), r()))
        })
      }
      return messages
    },
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Poll until `check` holds (cluster state converges over the bus). */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(20)
  }
}
