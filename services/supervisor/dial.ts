import { connect as netConnect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import { nodeTlsOptions } from '../contracts/node-tls.ts'
import type { TlsOptions } from '../contracts/store.ts'

/**
 * How a link reaches its brokers: a TCP or TLS socket to a URL, or, for a supervisor running in
 * the same process as its gateway, an in-process connection the gateway hands out (the
 * gateway's `inProcessDialer`): the same MQTT and the same login, without a socket.
 */
export type LocalDialer = () => Duplex

const MQTT_PORT = 1883 // IANA
const MQTTS_PORT = 8883 // IANA

export function openSocket(url: string, tls: TlsOptions | null | undefined): Socket {
  const u = new URL(url)
  const secure = u.protocol === 'mqtts:'
  const port = Number(u.port || (secure ? MQTTS_PORT : MQTT_PORT))
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
  return socket
}
