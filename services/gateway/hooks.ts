/**
 * The aedes hooks: what a client may do, decided at CONNECT, PUBLISH, SUBSCRIBE and delivery.
 * One named step each, in the order a client meets them (as aedes lists its `connectActions` in
 * lib/handlers/connect.js); `createHooks` hands aedes the list.
 */
import type { Duplex } from 'node:stream'
import type { AedesOptions, AuthenticateError, Client } from 'aedes'
import type { Logger } from '../common/log.ts'
import {
  ConnackError,
  clientIdProblem,
  mayPublish,
  mayReceive,
  maySubscribe,
  type Authenticator,
  type Principal,
} from './auth.ts'
import { isBridgeOwn, isCanaryTopic } from '../contracts/links.ts'
import type { ClientInternals } from './aedes-internals.ts'
import { clientAddressOf } from './client-address.ts'
import type { GatewayCounters } from './metrics.ts'

type Hooks = Required<
  Pick<
    AedesOptions,
    'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'
  >
>

/** What the hooks share with each other and with the broker around them. */
export interface HookContext {
  authenticator: Authenticator
  counters: GatewayCounters
  /** The keep-alive bounds of `BrokerLimits`, in seconds. */
  limits: { keepAliveMin: number; keepAliveMax: number }
  log: Logger
  /** Split horizon: true when delivering to `clientId` would send a message back to its origin. */
  isEcho: (clientId: string, originClientId: string | undefined) => boolean
  /** The gateway does not reach the bus now (bus-loss.ts): nothing could be queued or routed. */
  busLost: () => boolean
  /** Who each authenticated client is. */
  principals: WeakMap<Client, Principal>
  /** Sockets accepted while the gateway was past `limits.maxConnections`. */
  overLimit: WeakSet<Duplex>
  /** CONNECTs `preConnect` found wrong; `authenticate` refuses them with this CONNACK. */
  refusals: WeakMap<Client, ConnackError>
  /** Clients that sent an empty client id: the one aedes made up is unique, so in no namespace. */
  madeUpIds: WeakSet<Client>
  // Packets refused by authorizePublish: acknowledged as usual and then dropped, so only the
  // offending publish is lost and the bridge keeps its link (see `authorizePublish`).
  denied: WeakSet<object>
}

export function createHooks(ctx: HookContext): Hooks {
  return {
    preConnect: preConnect(ctx),
    authenticate: authenticate(ctx),
    authorizePublish: authorizePublish(ctx),
    authorizeSubscribe: authorizeSubscribe(ctx),
    authorizeForward: authorizeForward(ctx),
  }
}

/** Adapt an async hook to aedes' callback form, once. */
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

/** CONNECT fields the gateway refuses (decided in `authenticate`) or adjusts. */
function preConnect({ limits, refusals, madeUpIds }: HookContext): Hooks['preConnect'] {
  return (client, packet, callback) => {
    const keepalive = packet.keepalive ?? 0
    // [MQTT-3.1.3-8]: a zero-byte ClientId needs CleanSession=1; aedes would make one up.
    if (packet.clientId === '') madeUpIds.add(client)
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
  }
}

/** Who the client is, or the CONNACK code that refuses it. */
function authenticate({
  authenticator,
  counters,
  log,
  principals,
  overLimit,
  refusals,
  madeUpIds,
  busLost,
}: HookContext): Hooks['authenticate'] {
  return (client, username, password, done) => {
    const internals = client as unknown as ClientInternals
    const check = async (): Promise<boolean> => {
      const refusal = refusals.get(client)
      if (refusal) throw refusal
      // Decided when the socket was accepted (see `handle` in broker.ts), so CONNECTs racing
      // each other cannot all slip under the limit.
      if (overLimit.has(internals.conn)) {
        throw new ConnackError(3, 'server unavailable: connection limit reached')
      }
      if (busLost()) throw new ConnackError(3, 'server unavailable: this gateway lost the bus')
      const principal = await authenticator.authenticate({
        username,
        password,
        // The listener's verdict under trustProxy (PROXY header, X-Forwarded-For), else the peer.
        remoteAddress: clientAddressOf(internals.conn, internals.req),
      })
      const idProblem = clientIdProblem(principal, client.id, madeUpIds.has(client))
      if (idProblem) throw new ConnackError(2, `identifier rejected: ${idProblem}`)
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
      // "Not now" (3: a limit, overload, the bus lost) closes the connection without a CONNACK,
      // as Mosquitto does at max_connections: a client retries a connection that failed, but
      // MQTT.js (Node-RED, most Node clients) never retries one refused by CONNACK, whatever
      // the code, so a bus outage or a full gateway left them offline for good. aedes sends
      // nothing to a client closed before its check answers.
      if (e.returnCode === 3) client.close()
      done(e, false)
    })()
  }
}

/** Runs on every inbound PUBLISH: the client's rights, and the inbound counters. */
function authorizePublish({
  counters,
  log,
  principals,
  denied,
}: HookContext): Hooks['authorizePublish'] {
  return (client, packet, callback) => {
    const principal = client ? principals.get(client) : undefined
    // client is null for wills of clients on a dead gateway: they passed this check when the
    // client connected ($-topics and grants are checked on the will at CONNECT time too).
    // The fabric's supervisor publishes its links' canaries ($UB/canary/<upstream id>).
    const canary = principal?.kind === 'internal' && isCanaryTopic(packet.topic)
    if (client && principal && !canary && !mayPublish(principal, packet.topic)) {
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
      // Who published it, on the packet now: aedes 1.2 queues the copies for persistent sessions
      // before it records the sender (enqueueOffline runs ahead of emitPacket), so a queued copy
      // had none, and no-local and split horizon (authorizeForward) could not recognise it. A
      // `both` link whose session reconnected with a backlog got what had come down back from
      // its queue, and sent it up again (test/supervisor/inbound-upstream-restart.test.ts).
      ;(packet as { clientId?: string }).clientId = client.id
    }
    callback(null)
  }
}

function authorizeSubscribe({
  counters,
  log,
  principals,
}: HookContext): Hooks['authorizeSubscribe'] {
  return (client, sub, callback) => {
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
  }
}

/** Runs on every delivery, queued or live: grants re-checked, loops stopped, and the counters. */
function authorizeForward({
  counters,
  isEcho,
  principals,
}: HookContext): Hooks['authorizeForward'] {
  return (client, packet) => {
    const principal = principals.get(client)
    const origin = (packet as { clientId?: string }).clientId
    if (principal?.kind === 'bridge' && !mayReceive(principal, packet.topic)) {
      // Only a stored or restored subscription can lead here (a live SUBSCRIBE outside the
      // grants was refused); the queue entry is erased by aedes when this returns null.
      counters.deliveryDenied++
      return null
    }
    if (principal?.kind === 'internal' || principal?.kind === 'bridge') {
      // No-local for bridge links (ARCHITECTURE.md §9): a bridge never gets back what it
      // published, on its session or on the local connection of what it brings in.
      if (isBridgeOwn(client.id, origin)) return null
      // Split horizon: what the peer instance's bridge published here does not go back to it.
      if (principal.kind === 'internal' && isEcho(client.id, origin)) return null
    }
    counters.messagesOut++
    counters.bytesOut += packet.payload.length
    return packet
  }
}

function usernameOf(p: Principal): string | undefined {
  return p.kind === 'anonymous' ? undefined : p.username
}
