import { createHash, randomBytes } from 'node:crypto'
import type { MqttClient } from 'mqtt'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createStoreClient } from '../../services/store/index.ts'

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
