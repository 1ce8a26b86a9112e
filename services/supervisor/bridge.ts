import { createActor, type Actor } from 'xstate'
import {
  backoffDelay,
  bridgeMachine,
  type Binding,
  type BridgeEvent,
  type BridgeMachine,
  type BridgeState,
} from '../../machines/index.ts'
import type { Logger } from '../common/log.ts'
import { connectMqttSession, discardOnAny, type MqttSession } from './mqtt-session.ts'
import type { DupGuard } from './dup-guard.ts'
import { createRemapper, type Remapper } from './remap.ts'
import {
  connectUpstream,
  UpstreamRefusedError,
  type UpstreamSession,
  type UpstreamTarget,
} from './upstream-client.ts'
import { createForwardWindow, type ForwardWindow } from './window.ts'
import { createInbound, type Inbound } from './inbound.ts'
import { localUrls, syncFilters, wantedFilters, type FilterState } from './link-filters.ts'

/** One link: local gateway → upstream broker, for one Active upstream. */
export interface BridgeLink {
  readonly upstreamId: string
  /** Apply new bindings without dropping the link (subscribe / unsubscribe the difference). */
  setBindings(bindings: readonly Binding[]): Promise<void>
  /**
   * Off the mesh tree (ARCHITECTURE.md §9): unsubscribe every filter but keep the bindings, so a
   * message already queued for the session or in flight when the block lands still goes upstream
   * (rather than being acknowledged as unrouted and lost); nothing new queues meanwhile.
   */
  setBlocked(blocked: boolean): Promise<void>
  status(): LinkCounters
  /** Stop forwarding; the local session stays, so messages keep waiting for the next owner. */
  stop(reason?: string): Promise<void>
  /** Stop and drop the local session (the upstream was deleted). */
  forget(): Promise<void>
  /** Resolves when the link reaches Stopped by itself (rejected credential, lease lost). */
  readonly stopped: Promise<void>
}

export interface LinkCounters {
  state: BridgeState
  lastError: string | null
  forwarded: number
  waiting: number
  lagMs: number
  /** Local messages that matched no binding (bindings shrank while they were queued). */
  unrouted: number
  /** Dropped by the duplicate guard: a message seen too often too fast, as in a bridge loop. */
  duplicatesDropped: number
}

export interface Credentials {
  username?: string | null
  password?: string | null
}

export interface CreateBridgeLinkOptions {
  upstreamId: string
  target: UpstreamTarget
  bindings: readonly Binding[]
  /** Read on every connect attempt: a credential may change between attempts. */
  credentials: () => Promise<Credentials>
  /**
   * The local gateways, comma-separated (`localBrokerUrl`): the session is the cluster's, so it
   * resumes on any of them; the next is tried after a failure.
   */
  local: { url: string; username?: string; password?: string }
  /** Stable per upstream: the gateway keeps this session's queue while the bridge is down. */
  localClientId: string
  upstreamClientId: string
  window: number
  backoffBaseMs?: number
  backoffMaxMs?: number
  /** Checked before each connect: false once this supervisor no longer holds the lease. */
  mayConnect?: () => boolean
  /** The stray-cycle guard; none by default (see dup-guard.ts for why). */
  dupGuard?: DupGuard
  onChange?: () => void
  log: Logger
}

/** One link's state, shared by the steps that open and close it. */
interface Link extends FilterState {
  readonly options: CreateBridgeLinkOptions
  /** To the link's machine (`bridge.connected`, `bridge.failed`, `bridge.stop`). */
  readonly send: (event: BridgeEvent) => void
  /** Bumped by every open and close: a step of an older attempt finds it changed and gives up. */
  gen: number
  /** The connections of the attempt that reached Forwarding (or is subscribing). */
  fw: ForwardWindow | undefined
  /** What comes down (bindings `in`, `both`); none when no binding brings anything in. */
  inbound: Inbound | undefined
  /** Which of the local gateways the next attempt dials; moves on after a failure there. */
  localTurn: number
  /** Forwarded by the windows of earlier connections. */
  forwardedBefore: number
  unrouted: number
  closing: Promise<void>
}

/** What one connect attempt has opened so far. */
interface Attempt {
  readonly gen: number
  credentials?: Credentials
  upstream?: UpstreamSession
  window?: ForwardWindow
  inbound?: Inbound
  local?: MqttSession
  /** The link holds the connections now: closing them is `closeLink`'s job. */
  handedOver: boolean
}

type OpenStep = (link: Link, attempt: Attempt) => Promise<void> | void

/**
 * Opening a link, as aedes lists its `connectActions`: one small named step after another.
 * After each step the attempt is checked against the link's generation: a close (or a newer
 * attempt) while the step ran abandons it, and it closes what it opened unless the link holds it.
 */
const OPEN_STEPS: readonly OpenStep[] = [
  readCredentials,
  connectUpstreamBroker,
  connectLocalSession,
  handOver,
  subscribeSources,
  reportConnected,
]

export function createBridgeLink(options: CreateBridgeLinkOptions): BridgeLink {
  const { upstreamId, dupGuard } = options
  const link: Link = {
    options,
    send: (event) => actor.send(event),
    gen: 0,
    remap: createRemapper(options.bindings),
    blocked: false,
    sessionFilters: [],
    upstreamFilters: [],
    local: undefined,
    upstream: undefined,
    fw: undefined,
    inbound: undefined,
    localTurn: 0,
    forwardedBefore: 0,
    unrouted: 0,
    closing: Promise.resolve(),
  }
  let resolveStopped!: () => void
  const stopped = new Promise<void>((r) => (resolveStopped = r))
  const actor = createLinkActor(link, () => resolveStopped())

  const stop = async (reason = 'stopped') => {
    if (actor.getSnapshot().value !== 'Stopped') actor.send({ type: 'bridge.stop', reason })
    await link.closing
    actor.stop()
  }

  actor.start()

  return {
    upstreamId,
    stopped,
    setBindings: (bindings) => setBindings(link, bindings),
    setBlocked: async (blocked) => {
      link.blocked = blocked
      await syncFilters(link, (err) => fail(link, link.gen, err))
    },
    status() {
      const snap = actor.getSnapshot()
      const { fw } = link
      return {
        state: snap.value as BridgeState,
        lastError: snap.context.lastError,
        forwarded: link.forwardedBefore + (fw?.forwarded ?? 0),
        waiting: fw?.waiting ?? 0,
        lagMs: fw?.lagMs() ?? 0,
        unrouted: link.unrouted,
        duplicatesDropped: dupGuard ? dupGuard.dropped : 0,
      }
    },
    stop,
    async forget() {
      await stop('deleted')
      const { url, username, password } = options.local
      await discardOnAny(localUrls(url), { clientId: options.localClientId, username, password })
    },
  }
}

/** The `bridge` machine with this link's I/O and backoff provided. */
function createLinkActor(link: Link, onStopped: () => void): Actor<BridgeMachine> {
  const { upstreamId, backoffBaseMs, backoffMaxMs, onChange = () => {}, log } = link.options
  const machine: BridgeMachine = bridgeMachine.provide({
    actions: {
      openLink: () => openLink(link),
      closeLink: () => closeLink(link),
    },
    delays: {
      backoff: ({ context }) =>
        backoffDelay({
          attempt: context.attempt,
          ...(backoffBaseMs === undefined ? {} : { baseMs: backoffBaseMs }),
          ...(backoffMaxMs === undefined ? {} : { maxMs: backoffMaxMs }),
        }),
    },
  })
  const actor: Actor<BridgeMachine> = createActor(machine)
  let lastState: string | undefined
  actor.subscribe((snap) => {
    if (snap.value !== lastState) {
      lastState = String(snap.value)
      log.info({ upstreamId, state: snap.value, lastError: snap.context.lastError }, 'bridge link')
      if (snap.value === 'Stopped') onStopped()
    }
    onChange()
  })
  return actor
}

/** A connection of attempt `gen` failed: the machine backs off, or stops on a refused login. */
function fail(link: Link, gen: number, err: Error): void {
  if (gen !== link.gen) return
  const fatal = err instanceof UpstreamRefusedError && err.fatal
  link.send({ type: 'bridge.failed', error: err.message, fatal })
}

/** Entry of Connecting. Checked first, like aedes's preConnect: the lease, before any I/O. */
function openLink(link: Link): void {
  const gen = ++link.gen
  const { mayConnect = () => true } = link.options
  if (!mayConnect()) return link.send({ type: 'bridge.stop', reason: 'lease lost' })
  void runOpenSteps(link, { gen, handedOver: false })
}

async function runOpenSteps(link: Link, attempt: Attempt): Promise<void> {
  try {
    for (const step of OPEN_STEPS) {
      const pending = step(link, attempt)
      if (pending) await pending
      if (attempt.gen !== link.gen) return abandon(attempt)
    }
  } catch (err) {
    void attempt.local?.close()
    void attempt.upstream?.close()
    fail(link, attempt.gen, err as Error)
  }
}

/** A stale attempt closes what it opened, unless the link already holds it. */
function abandon(attempt: Attempt): void {
  if (attempt.handedOver) return
  attempt.window?.close()
  attempt.inbound?.window.close()
  void attempt.local?.close()
  void attempt.upstream?.close()
}

async function readCredentials(link: Link, attempt: Attempt): Promise<void> {
  attempt.credentials = await link.options.credentials()
}

async function connectUpstreamBroker(link: Link, attempt: Attempt): Promise<void> {
  const { gen, credentials = {} } = attempt
  const inbound = link.remap.upstreamFilters.length
    ? createInbound({
        size: link.options.window,
        toLocal: (topic) => link.remap.toLocal(topic),
        onUnrouted: () => link.unrouted++,
        onError: (err) => fail(link, gen, err),
      })
    : undefined
  attempt.inbound = inbound
  attempt.upstream = await connectUpstream({
    target: link.options.target,
    clientId: link.options.upstreamClientId,
    username: credentials.username ?? null,
    password: credentials.password ?? null,
    onClose: (err) => fail(link, gen, err),
    ...(inbound ? { inbound: { onMessage: inbound.onMessage } } : {}),
  })
  inbound?.attachUpstream(attempt.upstream)
}

/**
 * The forwarding window, and the local session that feeds it: persistent, in bridge mode. Local
 * messages go through the window upstream, and are acknowledged locally once it says so.
 */
async function connectLocalSession(link: Link, attempt: Attempt): Promise<void> {
  const { gen } = attempt
  const { local: endpoint, localClientId, window: size, dupGuard } = link.options
  const session = attempt.upstream!
  let sessionLocal: MqttSession | undefined
  const win = createForwardWindow({
    size,
    publish: (topic, payload, opts, done) => session.publish(topic, payload, opts, done),
    // Messages may arrive in the same read as the CONNACK, before `connectMqttSession` resolves:
    // `sessionLocal` is set from the first message's session.
    ack: (id) => sessionLocal?.ack(id),
    pause: () => sessionLocal?.pause(),
    resume: () => sessionLocal?.resume(),
    onError: (err) => fail(link, gen, err),
  })
  attempt.window = win
  const urls = localUrls(endpoint.url)
  // A dead gateway must not keep the link: the next attempt dials the next one.
  const moveOn = () => {
    if (gen === link.gen) link.localTurn++
  }
  attempt.local = await connectMqttSession({
    url: urls[link.localTurn % urls.length]!,
    clientId: localClientId,
    clean: false,
    bridgeMode: true,
    ...(endpoint.username === undefined ? {} : { username: endpoint.username }),
    ...(endpoint.password === undefined ? {} : { password: endpoint.password }),
    onMessage: (msg, s) => {
      sessionLocal = s
      let targets = link.remap.map(msg.topic)
      if (targets.length === 0) link.unrouted++
      // Acknowledged like any other, so the PUBACK order holds, but not forwarded.
      else if (dupGuard && dupGuard.check(msg.topic, msg.payload, msg.retain)) targets = []
      win.push(msg, targets)
    },
    onClose: (err) => {
      moveOn()
      fail(link, gen, err)
    },
  }).catch((err: unknown) => {
    moveOn()
    throw err
  })
  sessionLocal = attempt.local
  attempt.inbound?.attachLocal(attempt.local)
}

function handOver(link: Link, attempt: Attempt): void {
  link.local = attempt.local
  link.upstream = attempt.upstream
  link.fw = attempt.window
  link.inbound = attempt.inbound
  attempt.handedOver = true
}

/**
 * Subscribe even when the session is present: SUBSCRIBE is idempotent [MQTT-3.8.4-3], and a
 * gateway that lost its sessions would otherwise leave the link silent. Filters of bindings
 * removed while the link was down are still in the persistent session: drop them, or the
 * gateway goes on queueing what no binding wants.
 */
async function subscribeSources(link: Link, attempt: Attempt): Promise<void> {
  const local = attempt.local!
  const wanted = wantedFilters(link)
  await local.unsubscribe(link.sessionFilters.filter((f) => !wanted.local.includes(f)))
  await local.subscribe(wanted.local)
  link.sessionFilters = [...wanted.local]
  // Coming in: the upstream's persistent session, likewise.
  const upstream = attempt.upstream!
  await upstream.unsubscribe(link.upstreamFilters.filter((f) => !wanted.upstream.includes(f)))
  await upstream.subscribe(wanted.upstream)
  link.upstreamFilters = [...wanted.upstream]
}

function reportConnected(link: Link): void {
  link.send({ type: 'bridge.connected' })
}

/** Entry of Backoff and Stopped: the attempt under way is stale from here on. */
function closeLink(link: Link): void {
  link.gen++
  if (link.fw) link.forwardedBefore += link.fw.forwarded
  link.fw?.close()
  link.fw = undefined
  link.inbound?.window.close()
  link.inbound = undefined
  const lo = link.local
  const up = link.upstream
  link.local = link.upstream = undefined
  // Close local first: stop taking messages before the upstream goes.
  link.closing = Promise.all([lo?.close(), up?.close()]).then(() => {})
}

async function setBindings(link: Link, bindings: readonly Binding[]): Promise<void> {
  const comingBefore = link.remap.upstreamFilters.length > 0
  link.remap = createRemapper(bindings)
  // A link starting or ending bringing messages in needs another kind of upstream session
  // (persistent, bridge mode): it reconnects.
  if (comingBefore !== link.remap.upstreamFilters.length > 0)
    return fail(link, link.gen, new Error('bindings changed direction'))
  await syncFilters(link, (err) => fail(link, link.gen, err))
}
