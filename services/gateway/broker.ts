import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { Aedes, type AuthenticateError, type Client, type PublishPacket } from 'aedes'
import type { Logger } from '../common/log.ts'
import {
  ConnackError,
  mayPublish,
  maySubscribe,
  type Authenticator,
  type Principal,
} from './auth.ts'
import { createConnackGate, type GatedClient } from './connack-gate.ts'
import type { GatewayCounters } from './metrics.ts'
import type { AedesMq } from './mq.ts'
import type { BusPersistence } from './persistence.ts'

export interface BrokerLimits {
  /** Bytes; a larger packet closes its connection (3.1.1 has no way to say why). */
  maxPacketSize: number
  /** Clients per gateway; the next CONNECT gets CONNACK 3. */
  maxConnections: number
  /** Seconds; a smaller non-zero keep-alive is raised to it (safe: the client pings more often). */
  keepAliveMin: number
  /** Seconds, 0 = none; a larger or zero keep-alive gets CONNACK 2 (mosquitto max_keepalive). */
  keepAliveMax: number
}

export interface BrokerOptions {
  /** aedes broker id: random per start (a fixed id plus a restart loses messages, aedes#775). */
  id: string
  mq: AedesMq
  persistence: BusPersistence
  authenticator: Authenticator
  counters: GatewayCounters
  limits: BrokerLimits
  log: Logger
  /** aedes liveness beat; a dead gateway's wills fire 3–7 beats after its last one. */
  heartbeatMs: number
  /** Split horizon: true when delivering to `clientId` would send a message back to its origin. */
  isEcho?: (clientId: string, originClientId: string | undefined) => boolean
}

export interface Broker {
  aedes: Aedes
  /** Hand a connection (TCP/TLS socket or WebSocket stream) to aedes. */
  handle(conn: Duplex, req?: IncomingMessage): void
  principal(client: Client): Principal | undefined
  /** Close every connected client the predicate picks; returns how many. */
  disconnect(pick: (principal: Principal, client: Client) => boolean): number
  /** Connections accepted and not yet closed, CONNECTed or not: what maxConnections bounds. */
  openSockets(): number
  close(): Promise<void>
}

// aedes internals we rely on, in one place: the client's socket/request, its parser (for the
// packet-size limit) and the broker's client table.
interface ClientInternals {
  conn: Duplex & { remoteAddress?: string }
  req?: IncomingMessage
  _will?: { topic: string } | null
  _parser: { _parseLength(): boolean; packet: { length: number }; _emitError(e: Error): void }
}
type AedesInternals = {
  clients: Record<string, Client>
  connectedClients: number
  publish(packet: PublishPacket, client?: unknown, done?: unknown): void
}

/** Adapt an async hook to aedes' callback form, once (STYLE §4). */
function adapt<A extends unknown[], R>(
  fn: (...args: A) => Promise<R>,
  onDone: (err: Error | null, result?: R) => void
): (...args: A) => void {
  return (...args) =>
    void fn(...args).then(
      (r) => onDone(null, r),
      (e: Error) => onDone(e)
    )
}

export async function createBroker({
  id,
  mq,
  persistence,
  authenticator,
  counters,
  limits,
  log,
  heartbeatMs,
  isEcho = () => false,
}: BrokerOptions): Promise<Broker> {
  const principals = new WeakMap<Client, Principal>()
  let openSockets = 0 // MQTT connections accepted and not yet closed (limits.maxConnections)
  const overLimit = new WeakSet<Duplex>() // accepted while openSockets was past the limit
  const refusals = new WeakMap<Client, ConnackError>()
  // Packets refused by authorizePublish: acknowledged as usual and then dropped, so only the
  // offending publish is lost and the bridge keeps its link (see `authorizePublish`).
  const denied = new WeakSet<object>()
  const connackGate = createConnackGate()

  const aedes = await Aedes.createBroker({
    id,
    mq,
    persistence,
    heartbeatInterval: heartbeatMs,
    preConnect(client, packet, callback) {
      const keepalive = packet.keepalive ?? 0
      // [MQTT-3.1.3-8]: a zero-byte ClientId needs CleanSession=1; aedes would make one up.
      if (packet.clientId === '' && !packet.clean) {
        refusals.set(
          client,
          new ConnackError(2, 'identifier rejected: empty client id needs clean session')
        )
      } else if (limits.keepAliveMax > 0 && (keepalive === 0 || keepalive > limits.keepAliveMax)) {
        refusals.set(
          client,
          new ConnackError(2, `identifier rejected: keep-alive must be 1–${limits.keepAliveMax} s`)
        )
      } else if (keepalive > 0 && keepalive < limits.keepAliveMin) {
        packet.keepalive = limits.keepAliveMin
      }
      callback(null, true)
    },
    authenticate(client, username, password, done) {
      const internals = client as unknown as ClientInternals
      const check = async (): Promise<boolean> => {
        const refusal = refusals.get(client)
        if (refusal) throw refusal
        // Decided when the socket was accepted (see `handle`), so CONNECTs racing each other
        // cannot all slip under the limit.
        if (overLimit.has(internals.conn)) {
          throw new ConnackError(3, 'server unavailable: connection limit reached')
        }
        const principal = await authenticator.authenticate({
          username,
          password,
          remoteAddress: internals.conn.remoteAddress ?? internals.req?.socket?.remoteAddress,
        })
        const will = internals._will
        if (will && !mayPublish(principal, will.topic)) {
          throw new ConnackError(
            5,
            `not authorized: will topic '${will.topic}' is outside the client's rights`
          )
        }
        principals.set(client, principal)
        return true
      }
      adapt(check, (err, ok) => {
        if (!err) return done(null, ok ?? false)
        counters.authFailures++
        if (!(err instanceof ConnackError)) log.error({ err }, 'authentication failed unexpectedly')
        log.info({ clientId: client.id, username, reason: err.message }, 'refused a CONNECT')
        const e = err as AuthenticateError
        if (!(err instanceof ConnackError)) e.returnCode = 3
        done(e, false)
      })()
    },
    authorizePublish(client, packet, callback) {
      const principal = client ? principals.get(client) : undefined
      // client is null for wills of clients on a dead gateway: they passed this check when the
      // client connected ($-topics and grants are checked on the will at CONNECT time too).
      if (client && principal && !mayPublish(principal, packet.topic)) {
        // [MQTT-3.3.5-2] allows a positive acknowledgement or a closed connection. We ack and
        // drop: a bridge that got disconnected would resend the same QoS 1 message after
        // reconnecting, forever; an ack ends that loop, and the log and metric say what happened.
        denied.add(packet)
        counters.publishDenied++
        log.warn(
          { clientId: client.id, username: usernameOf(principal), topic: packet.topic },
          'dropped a PUBLISH outside the client’s rights'
        )
        return callback(null)
      }
      if (client) {
        counters.messagesIn++
        counters.bytesIn += packet.payload.length
      }
      callback(null)
    },
    authorizeSubscribe(client, sub, callback) {
      const principal = principals.get(client)
      if (principal && !maySubscribe(principal, sub.topic)) {
        counters.subscribeDenied++
        log.warn(
          { clientId: client.id, username: usernameOf(principal), filter: sub.topic },
          'refused a subscription outside the client’s rights'
        )
        return callback(null, null) // SUBACK 0x80 for this filter; the connection stays [MQTT-3.9.3]
      }
      callback(null, sub)
    },
    authorizeForward(client, packet) {
      const principal = principals.get(client)
      const origin = (packet as { clientId?: string }).clientId
      if (principal?.kind === 'internal' || principal?.kind === 'bridge') {
        // No-local for bridge links (DESIGN §7): a bridge never gets back what it published.
        if (origin === client.id) return null
        // Split horizon: what the peer instance's bridge published here does not go back to it.
        if (principal.kind === 'internal' && isEcho(client.id, origin)) return null
      }
      counters.messagesOut++
      counters.bytesOut += packet.payload.length
      return packet
    },
  })

  const internals = aedes as unknown as AedesInternals
  const publish = internals.publish.bind(aedes)
  internals.publish = (packet, client, done) => {
    if (denied.has(packet)) {
      const cb = (typeof client === 'function' ? client : done) as ((e?: Error) => void) | undefined
      return cb?.()
    }
    publish(packet, client, done)
  }

  // After the CONNACK and the resumed session's queue: live deliveries for restored
  // subscriptions then come after the older queued messages, in order [MQTT-4.6.0-6].
  aedes.on('clientReady', (client) => connackGate.release(client as unknown as GatedClient))
  aedes.on('clientError', (client, err) =>
    log.debug({ clientId: client.id, err: err.message }, 'client error; connection closed')
  )
  aedes.on('connectionError', (_client, err) =>
    log.debug({ err: err.message }, 'connection error before CONNECT completed')
  )
  ;(aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) =>
    log.error({ err }, 'broker error')
  )

  function enforcePacketSize(client: Client): void {
    // aedes has no packet-size option; mqtt-packet exposes the remaining length right after
    // parsing it, before buffering the body, so an oversized packet is refused early.
    const parser = (client as unknown as ClientInternals)._parser
    const parseLength = parser._parseLength
    parser._parseLength = function checkedParseLength() {
      const ok = parseLength.call(this)
      if (ok && this.packet.length > limits.maxPacketSize) {
        this._emitError(new Error(`packet of ${this.packet.length} bytes exceeds maxPacketSize`))
        return false
      }
      return ok
    }
  }

  let closing: Promise<void> | undefined
  return {
    aedes,
    handle(conn, req) {
      // Counted from accept to close, CONNECTed or not, as Mosquitto's max_connections counts.
      openSockets++
      if (openSockets > limits.maxConnections) overLimit.add(conn)
      conn.once('close', () => openSockets--)
      const client = aedes.handle(conn, req)
      enforcePacketSize(client)
      connackGate.hold(client as unknown as GatedClient)
    },
    principal: (client) => principals.get(client),
    openSockets: () => openSockets,
    disconnect(pick) {
      let n = 0
      for (const client of Object.values(internals.clients)) {
        const p = principals.get(client)
        if (p && pick(p, client)) {
          client.close()
          n++
        }
      }
      return n
    },
    close() {
      closing ??= new Promise<void>((resolve) => aedes.close(() => resolve())).then(() =>
        persistence.destroy()
      )
      return closing
    },
  }
}

function usernameOf(p: Principal): string | undefined {
  return p.kind === 'anonymous' ? undefined : p.username
}
