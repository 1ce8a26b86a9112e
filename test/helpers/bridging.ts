import type { MqttClient } from 'mqtt'
import { connectMqtt } from './gateway.ts'
import { api, type Instance } from './instance.ts'

/** Poll `fn` until it returns something other than undefined. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`)
    await new Promise((r) => setTimeout(r, 150))
  }
}

/** Wait until `inst` reports its link to upstream `upstreamId` Forwarding. */
export function untilForwarding(inst: Instance, upstreamId: string, timeoutMs = 30_000) {
  return until(
    'the link forwarding',
    async () =>
      (await api(inst, 'GET', `/api/v1/upstreams/${upstreamId}`)).link?.state === 'Forwarding'
        ? true
        : undefined,
    timeoutMs
  )
}

export interface BridgeTransport {
  /** `mqtt://127.0.0.1` or `mqtts://localhost` */
  host: string
  brokerPort(to: Instance): number
  httpPort(to: Instance): number
  tls?: { ca: string }
}

/** Plain MQTT and HTTP on the instances' own ports. */
export const PLAIN: BridgeTransport = {
  host: 'mqtt://127.0.0.1',
  brokerPort: (to) => Number(new URL(to.mqttUrl!).port),
  httpPort: (to) => Number(new URL(to.httpUrl).port),
}

/** `from` asks `to` for a connection, `to` accepts, `from` binds `bindings` and activates. */
export async function bridge(
  from: Instance,
  to: Instance,
  bindings: unknown,
  transport: BridgeTransport = PLAIN,
  accept: { grants?: string[] } = {}
): Promise<string> {
  const created = await api(from, 'POST', '/api/v1/upstreams', {
    host: transport.host,
    brokerPort: transport.brokerPort(to),
    httpPort: transport.httpPort(to),
    ...(transport.tls ? { tls: transport.tls } : {}),
  })
  const request = await until('the request to arrive', async () => {
    const pending = (await api(to, 'GET', '/api/v1/requests?status=Pending')) as Array<{
      id: string
      instanceId: string
    }>
    return pending.find((r) => r.instanceId === from.instanceId)
  })
  await api(to, 'POST', `/api/v1/requests/${request.id}/accept`, accept)
  await until('Approved', async () => {
    await api(from, 'POST', `/api/v1/upstreams/${created.id}/refresh`)
    return (await api(from, 'GET', `/api/v1/upstreams/${created.id}`)).status === 'Approved'
      ? true
      : undefined
  })
  await api(from, 'PUT', `/api/v1/upstreams/${created.id}/bindings`, bindings)
  await api(from, 'POST', `/api/v1/upstreams/${created.id}/activate`)
  return created.id as string
}

export interface Arrival {
  topic: string
  payload: string
  retain: boolean
}

/** A clean-session subscriber on `filter` that records every arrival, in order. */
export async function listen(
  url: string,
  filter: string
): Promise<{ client: MqttClient; got: Arrival[] }> {
  const got: Arrival[] = []
  const client = await connectMqtt(url)
  client.on('message', (topic, payload, packet) =>
    got.push({ topic, payload: payload.toString(), retain: packet.retain })
  )
  await client.subscribeAsync(filter, { qos: 1 })
  return { client, got }
}
