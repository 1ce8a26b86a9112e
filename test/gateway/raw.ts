import { connect, type Socket } from 'node:net'
import * as mqttPacket from 'mqtt-packet'

/**
 * A bare MQTT socket for what MQTT.js will not send (a second CONNECT, an empty client id with
 * clean session off, a silent keep-alive, garbage bytes): packets in, parsed packets out.
 */
export interface RawClient {
  socket: Socket
  packets: mqttPacket.Packet[]
  send(packet: mqttPacket.Packet): void
  write(bytes: Buffer): void
  next(cmd: string, timeoutMs?: number): Promise<mqttPacket.Packet>
  closed: Promise<void>
  end(): void
}

export async function rawClient(port: number): Promise<RawClient> {
  const socket = connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  socket.on('error', () => {}) // a reset by the broker is what some tests expect
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const packets: mqttPacket.Packet[] = []
  const waiting: Array<() => void> = []
  parser.on('packet', (p: mqttPacket.Packet) => {
    packets.push(p)
    for (const w of waiting.splice(0)) w()
  })
  socket.on('data', (d) => parser.parse(d))
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  return {
    socket,
    packets,
    send: (p) => void socket.write(mqttPacket.generate(p)),
    write: (b) => void socket.write(b),
    async next(cmd, timeoutMs = 3_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const i = packets.findIndex((p) => p.cmd === cmd)
        if (i !== -1) return packets.splice(i, 1)[0]!
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`no ${cmd} within ${timeoutMs} ms`)
        await new Promise<void>((r) => {
          const t = setTimeout(r, left)
          waiting.push(() => (clearTimeout(t), r()))
          void closed.then(() => (clearTimeout(t), r()))
        })
        if (socket.destroyed && !packets.some((p) => p.cmd === cmd)) {
          throw new Error(`socket closed before ${cmd}`)
        }
      }
    },
    closed,
    end: () => void socket.destroy(),
  }
}

export function connectPacket(
  fields: Partial<mqttPacket.IConnectPacket> = {}
): mqttPacket.IConnectPacket {
  return {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId: `raw-${Math.random().toString(36).slice(2, 10)}`,
    keepalive: 60,
    ...fields,
  }
}

/**
 * A bare socket whose session is subscribed to `topic` (CONNACK and SUBACK received), so the test
 * decides when it reads and what it acknowledges. Keep-alive 0: it may stay silent.
 */
export async function rawSubscriber(
  port: number,
  {
    clientId,
    clean,
    topic,
    qos = 1,
  }: { clientId: string; clean: boolean; topic: string; qos?: 0 | 1 | 2 }
): Promise<RawClient> {
  const raw = await rawClient(port)
  raw.send(connectPacket({ clientId, clean, keepalive: 0 }))
  await raw.next('connack')
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] })
  await raw.next('suback')
  return raw
}
