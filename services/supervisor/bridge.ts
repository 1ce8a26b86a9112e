import { createActor, type Actor } from 'xstate'
import {
  backoffDelay,
  bridgeMachine,
  type Binding,
  type BridgeMachine,
  type BridgeState,
} from '../../machines/index.ts'
import {
  connectMqttSession,
  discardOnAny,
  type MqttSession,
  type MqttSessionOptions,
} from './mqtt-session.ts'
import { createRemapper } from './remap.ts'
import { connectUpstream, UpstreamRefusedError } from './upstream-client.ts'
import { createForwardWindow } from './window.ts'
import { createFileUrlRewriter } from './file-urls.ts'
import { createInbound } from './inbound.ts'
import { drainWindow, DRAIN_MS } from './drain.ts'
import { canaryTopic, inboundClientIdOf } from '../contracts/links.ts'
import { createLinkCanary } from './canary.ts'
import { linkHealth } from './link-health.ts'
import { localUrls, serially, syncFilters, wantedFilters } from './link-filters.ts'
import type {
  Attempt,
  BridgeLink,
  CreateBridgeLinkOptions,
  Credentials,
  Link,
  LinkCounters,
} from './bridge-types.ts'

export type { BridgeLink, CreateBridgeLinkOptions, Credentials, LinkCounters }

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
    filterChanges: Promise.resolve(),
    local: undefined,
    upstream: undefined,
    fw: undefined,
    inbound: undefined,
    localIn: undefined,
    draining: false,
    health: options.healthRoot ? linkHealth(options.healthRoot, upstreamId) : undefined,
    canary: options.canary
      ? createLinkCanary({ topic: canaryTopic(upstreamId), ...options.canary })
      : undefined,
    localTurn: 0,
    forwardedBefore: 0,
    unrouted: 0,
    closing: Promise.resolve(),
  }
  let resolveStopped!: () => void
  const stopped = new Promise<void>((r) => (resolveStopped = r))
  const actor = createLinkActor(link, () => resolveStopped())

  const stop = async (reason = 'stopped') => {
    // A lost lease is someone else's link now: stop at once. Otherwise hand over clean.
    if (reason !== 'lease lost') await drainWindow(link, DRAIN_MS)
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
        ...(link.canary ? { canary: link.canary.status() } : {}),
      }
    },
    stop,
    async forget() {
      await stop('deleted')
      const { url, dial, username, password } = options.local
      const clientId = options.localClientId
      await discardOnAny(localUrls(url), { clientId, username, password, ...(dial && { dial }) })
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
    void attempt.localIn?.close()
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
  void attempt.localIn?.close()
  void attempt.upstream?.close()
}

async function readCredentials(link: Link, attempt: Attempt): Promise<void> {
  attempt.credentials = await link.options.credentials()
}

/** The link's tedgeUrl rewriting, against its bindings as they are now. */
const fileUrlsOf = (link: Link) =>
  createFileUrlRewriter({
    teRoot: link.options.healthRoot ?? '',
    localFilesUrl: link.options.filesUrl ?? (() => undefined),
    toLocal: (topic) => link.remap.toLocal(topic),
    ...(link.options.upstreamFilesUrl ? { upstreamFilesUrl: link.options.upstreamFilesUrl } : {}),
    toUpstream: (topic) => link.remap.map(topic)[0] ?? null,
  })

async function connectUpstreamBroker(link: Link, attempt: Attempt): Promise<void> {
  const { gen, credentials = {} } = attempt
  const inbound = link.remap.upstreamFilters.length
    ? createInbound({
        size: link.options.window,
        toLocal: (topic) => link.remap.toLocal(topic),
        rewrite: fileUrlsOf(link).inbound,
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
  const fileUrls = fileUrlsOf(link)
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
    // Not while draining: the window would read more as it empties, and never empty.
    resume: () => {
      if (!link.draining) sessionLocal?.resume()
    },
    onError: (err) => fail(link, gen, err),
  })
  attempt.window = win
  const dial = localDialer(link, gen)
  attempt.local = await dial({
    clientId: localClientId,
    clean: false,
    bridgeMode: true,
    ...(link.health ? { will: link.health.will } : {}),
    onMessage: (msg, s) => {
      sessionLocal = s
      if (link.canary && msg.topic === link.canary.topic) {
        return win.push(msg, [], link.canary.arrived(msg.payload)) // its turn is its answer
      }
      if (link.health?.isCheck(msg.topic)) {
        link.health.report(s)
        return win.push(msg, []) // acknowledged in turn, not forwarded
      }
      let targets = link.remap.map(msg.topic)
      if (targets.length === 0) link.unrouted++
      // Acknowledged like any other, so the PUBACK order holds, but not forwarded.
      else if (dupGuard && dupGuard.check(msg.topic, msg.payload, msg.retain)) targets = []
      const payload = targets.length ? fileUrls.outbound(msg.topic, msg.payload) : msg.payload
      win.push(payload === msg.payload ? msg : { ...msg, payload }, targets)
    },
  })
  sessionLocal = attempt.local
  if (attempt.inbound && endpoint.inboundOnSession) attempt.inbound.attachLocal(attempt.local)
  else if (attempt.inbound) {
    // What comes down goes out on a connection of its own: the session's socket is paused when
    // the window going out is full, and the local acknowledgements the window coming in waits
    // for must not wait behind it (both windows would wait for each other for good).
    attempt.localIn = await dial({ clientId: inboundClientIdOf(localClientId), clean: true })
    attempt.inbound.attachLocal(attempt.localIn)
  }
}

/**
 * Connections of attempt `gen` to the local gateway this attempt's turn names, with the link's
 * credentials. A dead gateway must not keep the link: after a failure there (to connect, or
 * later) the next attempt dials the next one.
 */
function localDialer(link: Link, gen: number) {
  const { local: endpoint } = link.options
  const urls = localUrls(endpoint.url)
  const url = urls[link.localTurn % urls.length]!
  const moveOn = () => {
    if (gen === link.gen) link.localTurn++
  }
  return (options: Omit<MqttSessionOptions, 'url' | 'username' | 'password' | 'onClose'>) =>
    connectMqttSession({
      url,
      ...(endpoint.dial ? { dial: endpoint.dial } : {}),
      ...options,
      ...(endpoint.username === undefined ? {} : { username: endpoint.username }),
      ...(endpoint.password === undefined ? {} : { password: endpoint.password }),
      onClose: (err) => {
        moveOn()
        fail(link, gen, err)
      },
    }).catch((err: unknown) => {
      moveOn()
      throw err
    })
}

function handOver(link: Link, attempt: Attempt): void {
  link.local = attempt.local
  link.localIn = attempt.localIn
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
function subscribeSources(link: Link, attempt: Attempt): Promise<void> {
  return serially(link, () => subscribeWanted(link, attempt))
}

async function subscribeWanted(link: Link, attempt: Attempt): Promise<void> {
  const local = attempt.local!
  const wanted = wantedFilters(link)
  await local.unsubscribe(link.sessionFilters.filter((f) => !wanted.local.includes(f)))
  await local.subscribe(wanted.local)
  link.sessionFilters = [...wanted.local]
  if (link.health) await local.subscribe(link.health.checkFilters)
  if (link.canary) await local.subscribe([link.canary.topic])
  // Coming in: the upstream's persistent session, likewise.
  const upstream = attempt.upstream!
  await upstream.unsubscribe(link.upstreamFilters.filter((f) => !wanted.upstream.includes(f)))
  await upstream.subscribe(wanted.upstream)
  link.upstreamFilters = [...wanted.upstream]
}

function reportConnected(link: Link): void {
  reportHealth(link, true)
  link.canary?.start()
  link.send({ type: 'bridge.connected' })
}

/**
 * The link's health, locally and, under bindings going out, upstream too: the link's own
 * publishes never come back to its local session (no-local), so it sends the upstream copy itself.
 */
function reportHealth(link: Link, up: boolean): void {
  const { health } = link
  if (!health) return
  health.report(link.local, up)
  for (const topic of link.remap.map(health.topic))
    link.upstream?.publish(topic, health.payload(), { qos: 1, retain: true }, () => {})
}

/** Entry of Backoff and Stopped: the attempt under way is stale from here on. */
function closeLink(link: Link): void {
  link.gen++
  reportHealth(link, false)
  link.canary?.stop()
  if (link.fw) link.forwardedBefore += link.fw.forwarded
  link.fw?.close()
  link.fw = undefined
  link.inbound?.window.close()
  link.inbound = undefined
  const lo = link.local
  const loIn = link.localIn
  const up = link.upstream
  link.local = link.localIn = link.upstream = undefined
  // Close local first: stop taking messages before the upstream goes.
  link.closing = Promise.all([lo?.close(), loIn?.close(), up?.close()]).then(() => {})
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
