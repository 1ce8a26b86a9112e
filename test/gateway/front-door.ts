/**
 * Test helpers for the gateway's front door: PROXY protocol headers, and a bare CONNECT sent
 * after one over TCP or TLS that reports the CONNACK code (or that the socket closed).
 */
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import * as mqttPacket from 'mqtt-packet'
import { connectPacket } from './raw.ts'

export function proxyV1(src: string, family: 'TCP4' | 'TCP6' = 'TCP4'): Buffer {
  const dst = family === 'TCP4' ? '127.0.0.1' : '::1'
  return Buffer.from(`PROXY ${family} ${src} ${dst} 50123 1883\r\n`)
}

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')

/** A v2 header: PROXY over INET (4 address bytes) or INET6 (16), or LOCAL with no address. */
export function proxyV2(src: number[] | 'local', tlvs: Buffer = Buffer.alloc(0)): Buffer {
  if (src === 'local') {
    return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])])
  }
  const v6 = src.length === 16
  const dst = v6 ? [...new Array<number>(15).fill(0), 1] : [127, 0, 0, 1]
  const body = Buffer.concat([
    Buffer.from(src),
    Buffer.from(dst),
    Buffer.from([0xc3, 0x8b, 0x07, 0x5b]),
    tlvs,
  ])
  const len = Buffer.alloc(2)
  len.writeUInt16BE(body.length)
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, v6 ? 0x21 : 0x11]), len, body])
}

/** A CONNACK's return code, or 'closed': the server closed, or sent nothing in time. */
/** A CONNACK's return code, the connection closed without one, or no answer in time. */
export type Outcome = number | 'closed' | 'timeout'

/**
 * Open a connection, write `header` (if any) and then a CONNECT with `fields`; resolves with
 * the CONNACK's return code, or 'closed' when the server closed without one.
 */
export async function connackAfter(
  port: number,
  header: Buffer | undefined,
  fields: Partial<mqttPacket.IConnectPacket> = {},
  { tls = false, timeoutMs = 5_000 }: { tls?: boolean; timeoutMs?: number } = {}
): Promise<Outcome> {
  const raw = netConnect(port, '127.0.0.1')
  raw.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    raw.once('connect', resolve)
    raw.once('error', reject)
  })
  if (header) raw.write(header)
  let socket: Socket = raw
  if (tls) {
    const secure = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' })
    secure.on('error', () => {})
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve)
      secure.once('close', () => reject(new Error('TLS closed before the handshake')))
    }).catch(() => undefined)
    socket = secure
  }
  return new Promise<Outcome>((resolve) => {
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    const timer = setTimeout(() => finish('timeout'), timeoutMs)
    const finish = (o: Outcome) => {
      clearTimeout(timer)
      socket.destroy()
      raw.destroy()
      resolve(o)
    }
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') finish((p as mqttPacket.IConnackPacket).returnCode ?? 0)
    })
    socket.on('data', (d: Buffer) => parser.parse(d))
    socket.once('close', () => finish('closed'))
    if (!socket.destroyed) socket.write(mqttPacket.generate(connectPacket(fields)))
  })
}
