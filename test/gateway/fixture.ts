import { createHash, randomBytes } from 'node:crypto'
import type { IClientOptions, MqttClient } from 'mqtt'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import { BUCKETS } from '../../services/contracts/buckets.ts'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import type { GatewayOptions } from '../../services/gateway/index.ts'
import { createStoreClient, startStore } from '../../services/store/index.ts'
import { createTestDb } from '../helpers/db.ts'
import { collect, connectMqtt, startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'

/** A downstream's request, accepted with `grants`: the bridge's MQTT login and its request id. */
export async function acceptedBridge(
  bus: Bus,
  grants: string[],
  {
    instanceId = `UB_${randomBytes(4).toString('hex')}`,
    secret = randomBytes(16).toString('base64url'),
  } = {}
) {
  const call = createStoreClient({ bus }).call
  const { request } = await call('request.create', {
    instanceId,
    secretHash: createHash('sha256').update(secret).digest('hex'),
    sourceIp: '127.0.0.1',
    actor: { kind: 'remote' },
  })
  await call('event', {
    machine: 'request',
    id: request.id,
    event: { type: 'request.accept', grants },
    actor: { kind: 'operator' },
  })
  return { instanceId, secret, requestId: request.id }
}

/** SUBSCRIBE and the granted QoS per filter (MQTT.js reports any 0x80 as an error). */
export function subscribeGranted(
  client: MqttClient,
  filters: Record<string, { qos: 0 | 1 }>
): Promise<number[]> {
  return new Promise<number[]>((resolve, reject) =>
    client.subscribe(filters, (err, granted) => {
      const refused = (err as unknown as { packet?: { granted: number[] } } | null)?.packet
      if (refused) return resolve(refused.granted)
      if (err) return reject(err)
      resolve((granted ?? []).map((g) => g.qos))
    })
  )
}

export interface GatewayPair {
  /** The bus the store serves on, shared with gateway `a`. */
  busA: Bus
  busB: Bus
  a: TestGateway
  b: TestGateway
  close(): Promise<void>
}

/**
 * Two gateways acting as one broker (two in-process buses on one hub) and a binding store on
 * PGlite beside `a`: where bridges log in, and sessions move from one gateway to the other.
 */
export async function startGatewayPair(
  tag: string,
  {
    a: optionsA = {},
    b: optionsB = {},
    wrapBusB = (bus) => bus,
  }: {
    a?: Partial<GatewayOptions>
    b?: Partial<GatewayOptions>
    /** What gateway `b` sees of its bus (a test slows a part of it). */
    wrapBusB?: (bus: Bus) => Bus
  } = {}
): Promise<GatewayPair> {
  const hub = createInProcessHub()
  const prefix = uniquePrefix(tag)
  const busA = createInProcessBus({ prefix, hub })
  const busB = createInProcessBus({ prefix, hub })
  const testDb = await createTestDb('pglite')
  const store = await startStore({ bus: busA, db: testDb.db, log: silentLogger() })
  const a = await startTestGateway({ bus: busA, gatewayId: 'a', ...optionsA })
  const b = await startTestGateway({ bus: wrapBusB(busB), gatewayId: 'b', ...optionsB })
  return {
    busA,
    busB,
    a,
    b,
    async close() {
      await Promise.all([a.close(), b.close()])
      await store.close()
      await testDb.close()
      await busB.close()
      await busA.close()
    },
  }
}

/**
 * Reconnect a persistent session (clean session off), collecting from before its CONNACK: its
 * queue may arrive in the same read.
 */
export async function resumeSession(url: string, clientId: string, options: IClientOptions = {}) {
  let got: ReturnType<typeof collect> | undefined
  const client = await connectMqtt(
    url,
    { ...options, clientId, clean: false },
    (c) => (got = collect(c))
  )
  return { client, got: got! }
}

/**
 * The bus, with gateway queue bucket (`gw_outgoing`) methods replaced by `overrides(kv)`: a
 * test makes one part of the queue slow or failing, the rest is the real bus.
 */
export function withQueueBucket(bus: Bus, overrides: (kv: KvBucket) => Partial<KvBucket>): Bus {
  return Object.assign(Object.create(bus) as Bus, {
    async kv(name: string, options?: { ttlMs?: number }): Promise<KvBucket> {
      const kv = await bus.kv(name, options)
      if (name !== BUCKETS.gatewayOutgoing) return kv
      return Object.assign(Object.create(kv) as KvBucket, overrides(kv))
    },
  })
}
