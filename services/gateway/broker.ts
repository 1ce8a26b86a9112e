import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { Aedes, type Client } from 'aedes'
import type { Logger } from '../common/log.ts'
import type { AedesInternals, ClientInternals } from './aedes-internals.ts'
import { maySubscribe, type Authenticator, type Principal } from './auth.ts'
import { ackAfterStore, type AckingClient } from './ack-after-store.ts'
import { coalesceWrites } from './coalesce-writes.ts'
import { createGracefulClose, type ClosingClient } from './graceful-close.ts'
import { orderOwnEmits, type OrderedBroker } from './emit-order.ts'
import type { ConnackGate, GatedClient } from './connack-gate.ts'
import { createHooks, type HookContext } from './hooks.ts'
import type { GatewayCounters } from './metrics.ts'
import type { AedesMq } from './mq.ts'
import { startSessionExpiry } from './persistence/expiry.ts'
import { startQueueSweep } from './queue-sweep.ts'
import { holdWritesForLiveSessions } from './hold-writes.ts'
import { requireWellFormedStrings } from './strict-strings.ts'
import { readFairly, type ReadingClient } from './fair-reads.ts'
import { attachTeBus, type TeBus } from './edge/te-bus.ts'
import { createTwinFeed } from './edge/te-twin-feed.ts'
import { watchDownstreamsTe } from './edge/te-mounted.ts'
import type { StoreClient } from '../contracts/store-client.ts'

// Packets of one client handled in one batch before the others get a turn (fair-reads.ts). Each
// batch waits for setImmediate, which also lets the socket writes of a turn go out together:
// the full bridge path runs ~30 % faster than with aedes' back-to-back reads.
const PACKETS_PER_TURN = 256
import type { OutboundLimiter } from './outbound.ts'
import { boundDeliveries } from './delivery-bounds.ts'
import type { BusPersistence } from './persistence.ts'

export interface BrokerLimits {
  /** Bytes; a larger packet closes its connection (3.1.1 has no way to say why). */
  maxPacketSize: number
  /** Clients per gateway; the next CONNECT is closed without a CONNACK. */
  maxConnections: number
  /** Seconds; a smaller non-zero keep-alive is raised to it (safe: the client pings more often). */
  keepAliveMin: number
  /** Seconds, 0 = none; a larger or zero keep-alive gets CONNACK 2 (mosquitto max_keepalive). */
  keepAliveMax: number
  /** Deliveries a connection may have waiting for its socket; past it, it is cut (outbound.ts). */
  maxPendingMessages: number
  /** Payload bytes of those deliveries. */
  maxPendingBytes: number
  /** ms a connection's socket may take nothing while deliveries wait; then closed. 0 = never. */
  writeStallMs: number
  /** QoS 2 PUBLISHes awaiting PUBREL per client (aedes `maxInflightInbound`); one more: cut. */
  maxInboundQos2: number
  /** A persistent session unseen this long ends (persistence/expiry.ts); 0 = never. */
  sessionExpiryMs: number
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
  /** True while the gateway does not reach the bus: CONNECTs are closed without a CONNACK (bus-loss.ts). */
  busLost?: () => boolean
  /** Connected sessions' queues swept for messages whose live copy never came (queue-sweep.ts). */
  queueSweep?: Partial<QueueSweepSettings>
  /** thin-edge.io bus (edge/te-bus.ts): topic root (empty = off) and auto-registration. */
  te?: { root: string; autoRegister: boolean }
  /** The store the `te/` digital twin is fed to (edge/te-twin-feed.ts); absent = not fed. */
  twinStore?: StoreClient
  /** A te/ command ended naming a file (the file transfer service removes it later). */
  onCommandEnded?: (ended: { topic: string; tedgeUrl: string }) => void
}

export interface QueueSweepSettings {
  /** ms between ticks; 0 = no sweep. */
  everyMs: number
  /** ms a queued entry waits for its live copy before the sweep hands it out. */
  olderThanMs: number
  /** Sessions listed per tick, round robin. */
  sessionsPerTick: number
}

export const DEFAULT_QUEUE_SWEEP: QueueSweepSettings = {
  everyMs: 5_000,
  olderThanMs: 5_000,
  sessionsPerTick: 100,
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
  /** The HTTP entity API's writes, published as a client's (edge/te-bus.ts). */
  tePublish: TeBus['publish']
  /** Close every connection; first let what is in flight finish, for at most `drainMs` (graceful-close.ts). */
  close(drainMs?: number): Promise<void>
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
  busLost = () => false,
  queueSweep = {},
  te = { root: 'te', autoRegister: true },
  twinStore,
  onCommandEnded,
}: BrokerOptions): Promise<Broker> {
  const ctx: HookContext = {
    authenticator,
    counters,
    limits,
    log,
    isEcho,
    busLost,
    principals: new WeakMap(),
    overLimit: new WeakSet(),
    refusals: new WeakMap(),
    madeUpIds: new WeakSet(),
    denied: new WeakSet(),
  }
  storeOnlyGrantedSubscriptions(persistence, ctx.principals)
  const { connackGate, outbound, stalls } = boundDeliveries({ persistence, limits, counters, log })
  const aedes = await Aedes.createBroker({
    id,
    mq,
    persistence,
    heartbeatInterval: heartbeatMs,
    maxInflightInbound: limits.maxInboundQos2,
    ...createHooks(ctx),
  })
  dropDeniedPublishes(aedes, ctx.denied)
  orderOwnEmits(aedes as unknown as OrderedBroker)
  watchEvents(aedes, connackGate, counters, log)
  const kindOf = (client: Client) => ctx.principals.get(client)?.kind
  const twin = twinStore && createTwinFeed({ store: twinStore, counters, log })
  const teBus = attachTeBus({
    ...{ aedes, ...te, persistence, kindOf, counters, log },
    ...(twin ? { twin } : {}),
    ...(onCommandEnded ? { onCommandEnded } : {}),
  })
  // Downstreams' `te/` trees mirrored into their mounts: their bridges are told apart by principal.
  const bridgeOf = (client: Client) => {
    const p = ctx.principals.get(client)
    return p?.kind === 'bridge' ? p.username : undefined
  }
  const downstreams =
    twin &&
    twinStore &&
    watchDownstreamsTe({
      ...{ aedes, bridgeOf, persistence, twin, store: twinStore, log },
      onForgotten: () => void counters.teRetainedForgotten++,
    })
  holdWritesForLiveSessions(aedes, persistence, connackGate)
  const expiry = expireSessions(aedes, persistence, limits, counters, log)
  const sweep = startQueueSweep({
    ...DEFAULT_QUEUE_SWEEP,
    ...queueSweep,
    aedes,
    stranded: persistence.stranded,
    catchingUp: (client) => connackGate.holding(client as unknown as GatedClient),
    onRedelivered: (n) => (counters.queueRedelivered += n),
    log,
  })
  const timers = { stop: () => (expiry.stop(), sweep.stop(), stalls.stop()) }
  const broker = asBroker({
    aedes,
    persistence,
    limits,
    connackGate,
    outbound,
    expiry: timers,
    ctx,
  })
  const close = async (drainMs?: number) => {
    downstreams?.close()
    await broker.close(drainMs)
  }
  return { ...broker, close, tePublish: teBus.publish }
}

/**
 * aedes stores a client's whole SUBSCRIBE once any one filter in it is allowed, refused filters
 * included, and restores them all on reconnect; only the filters the client may hold are stored.
 * (Delivery re-checks the grants as well: `authorizeForward`.)
 */
function storeOnlyGrantedSubscriptions(
  persistence: BusPersistence,
  principals: WeakMap<Client, Principal>
): void {
  const addSubscriptions = persistence.addSubscriptions.bind(persistence)
  persistence.addSubscriptions = (client, subs) => {
    // aedes' persistence types its client narrower than its broker does: the same object.
    const principal = principals.get(client as unknown as Client)
    const granted = principal ? subs.filter((s) => maySubscribe(principal, s.topic)) : subs
    return granted.length ? addSubscriptions(client, granted) : Promise.resolve()
  }
}

/** aedes' publish, made to skip the packets `authorizePublish` acknowledged and refused. */
function dropDeniedPublishes(aedes: Aedes, denied: WeakSet<object>): void {
  const internals = aedes as unknown as AedesInternals
  const publish = internals.publish.bind(aedes)
  internals.publish = (packet, client, done) => {
    if (denied.has(packet)) {
      const cb = (typeof client === 'function' ? client : done) as ((e?: Error) => void) | undefined
      return cb?.()
    }
    publish(packet, client, done)
  }
}

/** Persistent sessions are seen at connect and disconnect, and end when unseen too long. */
function expireSessions(
  aedes: Aedes,
  persistence: BusPersistence,
  limits: BrokerLimits,
  counters: GatewayCounters,
  log: Logger
) {
  const touch = (client: Client) => {
    if (client.clean === false && client.id)
      persistence.touchSession(client.id).catch((err: unknown) => {
        log.debug({ err, clientId: client.id }, 'could not record when a session was seen')
      })
  }
  aedes.on('clientReady', touch)
  aedes.on('clientDisconnect', touch)
  return startSessionExpiry({
    expiryMs: limits.sessionExpiryMs,
    connected: () =>
      Object.values((aedes as unknown as AedesInternals).clients)
        .filter((c) => c.clean === false && c.id)
        .map((c) => c.id),
    touch: persistence.touchSession,
    unseenSince: persistence.sessionsUnseenSince,
    end: persistence.endSession,
    onExpired: () => counters.sessionsExpired++,
    log,
  })
}

function watchEvents(
  aedes: Aedes,
  connackGate: ConnackGate,
  counters: GatewayCounters,
  log: Logger
): void {
  // After the CONNACK and the resumed session's queue: live deliveries for restored
  // subscriptions then come after the older queued messages, in order [MQTT-4.6.0-6].
  aedes.on('clientReady', (client) => connackGate.release(client as unknown as GatedClient))
  aedes.on('clientError', (client, err) => {
    if (err.message.startsWith('maxInflightInbound exceeded')) counters.inboundQos2Exceeded++
    log.debug({ clientId: client.id, err: err.message }, 'client error; connection closed')
  })
  aedes.on('connectionError', (_client, err) =>
    log.debug({ err: err.message }, 'connection error before CONNECT completed')
  )
  ;(aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) =>
    log.error({ err }, 'broker error')
  )
}

function enforcePacketSize(client: Client, limits: BrokerLimits): void {
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

/** The `Broker` the gateway holds: connections in, clients out, and close. */
function asBroker({
  aedes,
  persistence,
  limits,
  connackGate,
  outbound,
  expiry,
  ctx: { principals, overLimit, counters },
}: {
  aedes: Aedes
  persistence: BusPersistence
  limits: BrokerLimits
  connackGate: ConnackGate
  outbound: OutboundLimiter
  expiry: { stop(): void }
  ctx: HookContext
}): Omit<Broker, 'tePublish'> {
  let openSockets = 0 // MQTT connections accepted and not yet closed (limits.maxConnections)
  let closing: Promise<void> | undefined
  const publishesInFlight = new WeakMap<ClosingClient, () => number>()
  const graceful = createGracefulClose({
    publishesInFlight: (client) => publishesInFlight.get(client)?.() ?? 0,
    deliveriesInFlight: persistence.deliveriesInFlight,
    onRefused: () => void counters.refusedWhileClosing++,
  })
  return {
    aedes,
    handle(conn, req) {
      // Counted from accept to close, CONNECTed or not, as Mosquitto's max_connections counts.
      openSockets++
      if (openSockets > limits.maxConnections) overLimit.add(conn)
      conn.once('close', () => openSockets--)
      coalesceWrites(conn)
      // The turn's writes leave together already; Nagle on top held a lone delivery for the
      // previous one's ACK (a healthy subscriber's p99 at 2,000 msg/s: 3-6 ms, 2.0-2.3 without).
      ;(conn as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true)
      const client = aedes.handle(conn, req)
      enforcePacketSize(client, limits)
      // Before the CONNECT is parsed: its client id, will and username are strings too.
      requireWellFormedStrings((client as unknown as ClientInternals)._parser)
      readFairly(client as unknown as ReadingClient, PACKETS_PER_TURN)
      const acks = ackAfterStore(client as unknown as AckingClient, persistence.expectWrites)
      // What was held for its PUBACKs is written now (persistence/held-writes.ts).
      conn.once('close', () => client.id && persistence.connectionClosed(client.id))
      publishesInFlight.set(client as unknown as ClosingClient, acks.inFlight)
      outbound.attach(client as unknown as GatedClient) // counted first: the gate wraps this
      // Inside the gate, which puts back what it wrapped once the CONNACK is out.
      graceful.attach(client as unknown as ClosingClient)
      connackGate.hold(client as unknown as GatedClient)
    },
    principal: (client) => principals.get(client),
    openSockets: () => openSockets,
    disconnect(pick) {
      let n = 0
      for (const client of Object.values((aedes as unknown as AedesInternals).clients)) {
        const p = principals.get(client)
        if (p && pick(p, client)) {
          client.close()
          n++
        }
      }
      return n
    },
    close(drainMs = 0) {
      expiry.stop()
      const clients = () =>
        Object.values((aedes as unknown as AedesInternals).clients) as unknown as ClosingClient[]
      closing ??= graceful
        .drain(clients, drainMs)
        .then(() => new Promise<void>((resolve) => aedes.close(() => resolve())))
        .then(() => persistence.destroy())
      return closing
    },
  }
}
