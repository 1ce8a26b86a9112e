import { createServer, type AddressInfo, type Server } from 'node:net'
import { Aedes, type AedesOptions } from 'aedes'
import { connectAsync, type MqttClient } from 'mqtt'

/** A plain aedes broker on port 0: stands in for a gateway in the supervisor's tests. */
export interface TestBroker {
  broker: Aedes
  /** Every PUBLISH a client sent, in arrival order (what reached the broker, no subscriber needed). */
  published: Received[]
  port: number
  url: string
  close(): Promise<void>
}

export async function startAedes(opts: AedesOptions = {}, port = 0): Promise<TestBroker> {
  const broker = await Aedes.createBroker(opts)
  const sockets = new Set<import('node:net').Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    broker.handle(socket)
  })
  await new Promise<void>((res, rej) => {
    server.once('error', rej)
    server.listen(port, '127.0.0.1', () => res())
  })
  const actual = (server.address() as AddressInfo).port
  const published: Received[] = []
  broker.on('publish', (packet, client) => {
    if (client) {
      published.push({
        topic: packet.topic,
        payload: Buffer.from(packet.payload),
        qos: packet.qos,
        retain: packet.retain,
      })
    }
  })
  let closed: Promise<void> | undefined
  return {
    broker,
    published,
    port: actual,
    url: `mqtt://127.0.0.1:${actual}`,
    close: () =>
      (closed ??= (async () => {
        // Like a crash of the broker: every connection goes at once.
        const stopped = new Promise<void>((res) => server.close(() => res()))
        for (const s of sockets) s.destroy()
        await stopped
        await new Promise<void>((res) => broker.close(() => res()))
      })()),
  }
}

export interface Received {
  topic: string
  payload: Buffer
  qos: number
  retain: boolean
}

/** A subscriber that records everything it gets, in order. */
export async function collect(
  url: string,
  filter: string,
  opts: { clientId?: string; clean?: boolean } = {},
  auth: { username?: string; password?: string } = {}
): Promise<{ client: MqttClient; got: Received[]; close(): Promise<void> }> {
  const client = await connectAsync(url, {
    protocolVersion: 4,
    reconnectPeriod: 200,
    ...auth,
    ...(opts.clientId ? { clientId: opts.clientId, clean: opts.clean ?? true } : {}),
  })
  const got: Received[] = []
  client.on('message', (topic, payload, packet) =>
    got.push({ topic, payload, qos: packet.qos, retain: packet.retain })
  )
  await client.subscribeAsync(filter, { qos: 1 })
  return { client, got, close: () => client.endAsync(true) }
}

export async function waitFor(
  check: () => boolean | Promise<boolean>,
  { timeoutMs = 10_000, what = 'condition' }: { timeoutMs?: number; what?: string } = {}
): Promise<void> {
  const start = Date.now()
  while (!(await check())) {
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** A port that was free a moment ago (for a broker that starts later on a known port). */
export { freePort } from '../../deploy/free-port.ts'
