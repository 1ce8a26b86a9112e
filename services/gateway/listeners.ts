import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
} from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { createServer as createTlsServer } from 'node:tls'
import { createWebSocketStream, WebSocketServer } from 'ws'
import { ConfigError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import { forwardedFor, recordClientAddress } from './client-address.ts'
import { readProxyHeader } from './proxy-protocol.ts'

export interface TlsMaterial {
  cert: string
  key: string
  ca?: string
}

export interface ListenerPorts {
  mqtt: number
  ws?: number
  tls?: number
  wss?: number
}

export interface ListenersOptions {
  host: string
  mqttPort: number
  /** The TCP port is the default rather than configured: a busy one falls back to an ephemeral one. */
  mqttPortIsDefault: boolean
  wsPort?: number
  tlsPort?: number
  wssPort?: number
  tls?: TlsMaterial
  /** Largest MQTT packet, bytes: a WebSocket frame may not be larger (ws buffers a whole frame). */
  maxPacketSize: number
  handle(conn: Duplex, req?: IncomingMessage): void
  log: Logger
  /**
   * A proxy is in front: the client's address comes from the PROXY protocol header (TCP, TLS)
   * or the last X-Forwarded-For entry (WebSocket); without one it is unknown, never loopback.
   */
  trustProxy?: boolean
  /** Under `trustProxy`: how long a TCP or TLS connection may take to send its PROXY header. */
  proxyHeaderTimeoutMs?: number
  /** A connection closed for a bad or missing PROXY header (counted). */
  onProxyRefused?: (reason: string) => void
}

export const DEFAULT_PROXY_HEADER_TIMEOUT_MS = 5_000

export interface Listeners {
  ports: ListenerPorts
  endpoints: string[]
  /** Stop accepting new connections; open ones carry on (a closing gateway drains them). */
  stopAccepting(): void
  /** Stop accepting and end connections that never became the broker's clients. */
  close(): Promise<void>
}

type AnyServer = NetServer | HttpServer

const open = new WeakMap<AnyServer, Set<Socket>>()

function listen(server: AnyServer, port: number, host: string): Promise<number> {
  if (!open.has(server)) {
    // Sockets that never sent CONNECT are not aedes clients; close() must still end them.
    const set = new Set<Socket>()
    open.set(server, set)
    server.on('connection', (s: Socket) => {
      set.add(s)
      s.once('close', () => set.delete(s))
    })
  }
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    server.once('error', onError)
    server.listen(port, host, () => {
      server.off('error', onError)
      resolve((server.address() as { port: number }).port)
    })
  })
}

async function listenNamed(
  server: AnyServer,
  port: number,
  host: string,
  key: string
): Promise<number> {
  try {
    return await listen(server, port, host)
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code
    throw new ConfigError(key, `cannot listen on ${host}:${port}${code ? ` (${code})` : ''}`, {
      cause,
    })
  }
}

const MQTT_FIXED_HEADER_MAX_BYTES = 5 // type byte + up to 4 length bytes [MQTT-2.2.3]

function webSockets(
  server: HttpServer,
  { handle, maxPacketSize, trustProxy = false }: ListenersOptions
): WebSocketServer {
  // Without a cap ws accepts (and buffers) frames of up to 100 MiB before the broker sees a byte.
  const wss = new WebSocketServer({
    server,
    maxPayload: maxPacketSize + MQTT_FIXED_HEADER_MAX_BYTES,
  })
  wss.on('connection', (ws, req) => {
    const conn = createWebSocketStream(ws)
    // The socket's peer is the proxy: only the header it appended names the client.
    if (trustProxy) recordClientAddress(conn, forwardedFor(req.headers['x-forwarded-for']))
    handle(conn, req)
  })
  return wss
}

/**
 * Under `trustProxy`, a TCP connection's PROXY header is read before anything else sees a byte;
 * `next` then gets the socket with the client's first byte next. A connection without a header
 * is served with no known address; a malformed header closes it.
 */
function afterProxyHeader(
  { trustProxy = false, proxyHeaderTimeoutMs, onProxyRefused, log }: ListenersOptions,
  next: (socket: Socket, address: string | undefined) => void
): (socket: Socket) => void {
  if (!trustProxy) return (socket) => next(socket, undefined)
  return (socket) => {
    const onError = () => socket.destroy() // a reset before the header: nothing to serve yet
    socket.on('error', onError)
    void readProxyHeader(socket, proxyHeaderTimeoutMs ?? DEFAULT_PROXY_HEADER_TIMEOUT_MS).then(
      (header) => {
        socket.off('error', onError)
        if (!header.ok) {
          log.info({ peer: socket.remoteAddress, reason: header.reason }, 'refused a connection')
          onProxyRefused?.(header.reason)
          return void socket.destroy()
        }
        next(socket, header.address)
      }
    )
  }
}

/** MQTT over TCP, and optionally WebSocket, TLS and secure WebSocket, each on its own port. */
export async function startListeners(opts: ListenersOptions): Promise<Listeners> {
  const { host, mqttPort, mqttPortIsDefault, wsPort, tlsPort, wssPort, tls, handle, log } = opts
  const servers: AnyServer[] = []
  const sockets: WebSocketServer[] = []
  const endpoints: string[] = []
  // A wildcard address is shown as loopback, as the HTTP endpoint is.
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
  try {
    const tcp = createNetServer(
      afterProxyHeader(opts, (socket, address) => {
        if (opts.trustProxy) recordClientAddress(socket, address)
        handle(socket)
      })
    )
    servers.push(tcp)
    let mqtt: number
    try {
      mqtt = await listen(tcp, mqttPort, host)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (!mqttPortIsDefault || code !== 'EADDRINUSE') {
        throw new ConfigError('mqttPort', `cannot listen on ${host}:${mqttPort} (${code ?? err})`, {
          cause: err,
        })
      }
      mqtt = await listen(tcp, 0, host)
      log.warn(
        { wanted: mqttPort, port: mqtt },
        'MQTT port (not set) is taken; listening on an ephemeral port'
      )
    }
    const ports: ListenerPorts = { mqtt }
    endpoints.push(`mqtt://${shown}:${mqtt}`)

    if (wsPort !== undefined) {
      const http = createHttpServer()
      servers.push(http)
      sockets.push(webSockets(http, opts))
      ports.ws = await listenNamed(http, wsPort, host, 'mqttWsPort')
      endpoints.push(`ws://${shown}:${ports.ws}`)
    }
    if ((tlsPort !== undefined || wssPort !== undefined) && !tls) {
      throw new ConfigError(
        tlsPort !== undefined ? 'mqttTlsPort' : 'mqttWssPort',
        'needs tlsCert and tlsKey'
      )
    }
    const secure = tls && { cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca } : {}) }
    if (tlsPort !== undefined && secure) {
      const server = secureListener(opts, secure)
      servers.push(server)
      ports.tls = await listenNamed(server, tlsPort, host, 'mqttTlsPort')
      endpoints.push(`mqtts://${shown}:${ports.tls}`)
    }
    if (wssPort !== undefined && secure) {
      const https = createHttpsServer(secure)
      servers.push(https)
      sockets.push(webSockets(https, opts))
      ports.wss = await listenNamed(https, wssPort, host, 'mqttWssPort')
      endpoints.push(`wss://${shown}:${ports.wss}`)
    }

    let closing: Promise<void> | undefined
    const close = (): Promise<void> =>
      (closing ??= (async () => {
        for (const s of sockets) for (const c of s.clients) c.terminate()
        await Promise.all([
          ...sockets.map((s) => new Promise<void>((r) => s.close(() => r()))),
          ...servers.map(closeServer),
        ])
      })())
    const stopAccepting = () => {
      for (const server of servers) if (server.listening) server.close()
    }
    return { ports, endpoints, stopAccepting, close }
  } catch (err) {
    await Promise.all(servers.map(closeServer))
    throw err
  }
}

/**
 * The TLS listener. Under `trustProxy` the proxy passes TLS through after its PROXY header, so a
 * plain TCP server reads the header and then hands the socket to a TLS server that does not
 * listen itself; the address is carried from the raw socket to the TLS one.
 */
function secureListener(
  opts: ListenersOptions,
  secure: { cert: string; key: string; ca?: string }
): NetServer {
  if (!opts.trustProxy) return createTlsServer(secure, (socket) => opts.handle(socket))
  const addresses = new WeakMap<Socket, string | undefined>()
  const tlsServer = createTlsServer(secure, (socket) => {
    const raw = (socket as unknown as { _parent?: Socket })._parent
    recordClientAddress(socket, raw ? addresses.get(raw) : undefined)
    opts.handle(socket)
  })
  return createNetServer(
    afterProxyHeader(opts, (socket, address) => {
      addresses.set(socket, address)
      tlsServer.emit('connection', socket)
    })
  )
}

function closeServer(server: AnyServer): Promise<void> {
  return new Promise((resolve) => {
    for (const s of open.get(server) ?? []) s.destroy()
    // Not listening: never started, or stopAccepting closed it already.
    if (!server.listening) return resolve()
    server.close(() => resolve())
  })
}
