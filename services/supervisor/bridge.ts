import { createActor, type Actor } from 'xstate'
import {
  backoffDelay,
  bridgeMachine,
  type Binding,
  type BridgeMachine,
  type BridgeState,
} from '../../machines/index.ts'
import type { Logger } from '../common/log.ts'
import { connectLocal, type LocalSession } from './mqtt-session.ts'
import type { DupGuard } from './dup-guard.ts'
import { createRemapper, type Remapper } from './remap.ts'
import {
  connectUpstream,
  UpstreamRefusedError,
  type UpstreamSession,
  type UpstreamTarget,
} from './upstream-client.ts'
import { createForwardWindow, type ForwardWindow } from './window.ts'

/** One link: local gateway → upstream broker, for one Active upstream. */
export interface BridgeLink {
  readonly upstreamId: string
  /** Apply new bindings without dropping the link (subscribe / unsubscribe the difference). */
  setBindings(bindings: readonly Binding[]): Promise<void>
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

export function createBridgeLink(options: CreateBridgeLinkOptions): BridgeLink {
  const {
    upstreamId,
    target,
    credentials,
    local: localEndpoint,
    localClientId,
    upstreamClientId,
    window: windowSize,
    backoffBaseMs,
    backoffMaxMs,
    mayConnect = () => true,
    dupGuard,
    onChange = () => {},
    log,
  } = options
  let remap: Remapper = createRemapper(options.bindings)
  // What the local session is subscribed to, as far as this process knows.
  let sessionFilters: string[] = []
  let gen = 0
  let local: LocalSession | undefined
  let upstream: UpstreamSession | undefined
  let fw: ForwardWindow | undefined
  let forwardedBefore = 0
  let unrouted = 0
  let closing: Promise<void> = Promise.resolve()
  let resolveStopped!: () => void
  const stopped = new Promise<void>((r) => (resolveStopped = r))

  const machine: BridgeMachine = bridgeMachine.provide({
    actions: {
      openLink: () => void openLink(),
      closeLink: () => closeLink(),
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
      if (snap.value === 'Stopped') resolveStopped()
    }
    onChange()
  })

  const fail = (myGen: number, err: Error) => {
    if (myGen !== gen) return
    const fatal = err instanceof UpstreamRefusedError && err.fatal
    actor.send({ type: 'bridge.failed', error: err.message, fatal })
  }

  async function openLink() {
    const myGen = ++gen
    if (!mayConnect()) {
      actor.send({ type: 'bridge.stop', reason: 'lease lost' })
      return
    }
    let up: UpstreamSession | undefined
    let lo: LocalSession | undefined
    try {
      const creds = await credentials()
      if (myGen !== gen) return
      up = await connectUpstream({
        target,
        clientId: upstreamClientId,
        username: creds.username ?? null,
        password: creds.password ?? null,
        onClose: (err) => fail(myGen, err),
      })
      if (myGen !== gen) return void up.close()
      const session = up
      let sessionLocal: LocalSession | undefined
      const win = createForwardWindow({
        size: windowSize,
        publish: (topic, payload, opts, done) => session.publish(topic, payload, opts, done),
        // Messages may arrive in the same read as the CONNACK, before `connectLocal` resolves:
        // `sessionLocal` is set from the first message's session.
        ack: (id) => sessionLocal?.ack(id),
        pause: () => sessionLocal?.pause(),
        resume: () => sessionLocal?.resume(),
        onError: (err) => fail(myGen, err),
      })
      lo = await connectLocal({
        url: localEndpoint.url,
        clientId: localClientId,
        clean: false,
        bridgeMode: true,
        ...(localEndpoint.username === undefined ? {} : { username: localEndpoint.username }),
        ...(localEndpoint.password === undefined ? {} : { password: localEndpoint.password }),
        onMessage: (msg, s) => {
          sessionLocal = s
          let targets = remap.map(msg.topic)
          if (targets.length === 0) unrouted++
          // Acknowledged like any other, so the PUBACK order holds, but not forwarded.
          else if (dupGuard && dupGuard.check(msg.topic, msg.payload, msg.retain)) targets = []
          win.push(msg, targets)
        },
        onClose: (err) => fail(myGen, err),
      })
      sessionLocal = lo
      if (myGen !== gen) {
        win.close()
        void lo.close()
        void up.close()
        return
      }
      local = lo
      upstream = up
      fw = win
      // Subscribe even when the session is present: SUBSCRIBE is idempotent [MQTT-3.8.4-3], and
      // a gateway that lost its sessions would otherwise leave the link silent. Filters of
      // bindings removed while the link was down are still in the persistent session: drop them,
      // or the gateway goes on queueing what no binding wants.
      const wanted = remap.filters
      await lo.unsubscribe(sessionFilters.filter((f) => !wanted.includes(f)))
      await lo.subscribe(wanted)
      sessionFilters = [...wanted]
      if (myGen !== gen) return
      actor.send({ type: 'bridge.connected' })
    } catch (err) {
      if (myGen !== gen) {
        void lo?.close()
        void up?.close()
        return
      }
      void lo?.close()
      void up?.close()
      fail(myGen, err as Error)
    }
  }

  function closeLink() {
    gen++
    if (fw) forwardedBefore += fw.forwarded
    fw?.close()
    fw = undefined
    const lo = local
    const up = upstream
    local = upstream = undefined
    // Close local first: stop taking messages before the upstream goes.
    closing = Promise.all([lo?.close(), up?.close()]).then(() => {})
  }

  actor.start()

  return {
    upstreamId,
    stopped,
    async setBindings(bindings) {
      const before = remap
      remap = createRemapper(bindings)
      const added = remap.filters.filter((f) => !before.filters.includes(f))
      const removed = before.filters.filter((f) => !remap.filters.includes(f))
      const lo = local
      if (!lo) return // not connected: the next connect subscribes the new filters
      try {
        await lo.subscribe(added)
        await lo.unsubscribe(removed)
        sessionFilters = [...remap.filters]
      } catch (err) {
        log.warn({ upstreamId, err }, 'binding change failed; reconnecting')
        fail(gen, err as Error)
      }
    },
    status() {
      const snap = actor.getSnapshot()
      return {
        state: snap.value as BridgeState,
        lastError: snap.context.lastError,
        forwarded: forwardedBefore + (fw?.forwarded ?? 0),
        waiting: fw?.waiting ?? 0,
        lagMs: fw?.lagMs() ?? 0,
        unrouted,
        duplicatesDropped: dupGuard ? dupGuard.dropped : 0,
      }
    },
    async stop(reason = 'stopped') {
      if (actor.getSnapshot().value !== 'Stopped') actor.send({ type: 'bridge.stop', reason })
      await closing
      actor.stop()
    },
    async forget() {
      await this.stop('deleted')
      // A clean CONNECT discards the session and its queue [MQTT-3.1.2-6].
      const lo = await connectLocal({
        url: localEndpoint.url,
        clientId: localClientId,
        clean: true,
        ...(localEndpoint.username === undefined ? {} : { username: localEndpoint.username }),
        ...(localEndpoint.password === undefined ? {} : { password: localEndpoint.password }),
        onMessage: () => {},
        onClose: () => {},
      })
      await lo.close()
    },
  }
}
