/** The bridge link's public shape and the state its open steps share (bridge.ts). */
import type { Binding, BridgeEvent, BridgeState } from '../../machines/index.ts'
import type { Logger } from '../common/log.ts'
import type { CanaryStatus, LinkCanary } from './canary.ts'
import type { CanaryPublisher } from './canary-publisher.ts'
import type { DupGuard } from './dup-guard.ts'
import type { Inbound } from './inbound.ts'
import type { LocalDialer } from './dial.ts'
import type { LinkHealth } from './link-health.ts'
import type { FilterState } from './link-filters.ts'
import type { MqttSession } from './mqtt-session.ts'
import type { UpstreamSession, UpstreamTarget } from './upstream-client.ts'
import type { ForwardWindow } from './window.ts'

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
  /** The end-to-end canary's findings; absent while it is off (canary.ts). */
  canary?: CanaryStatus
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
  local: {
    url: string
    username?: string
    password?: string
    /**
     * The gateway in this process: every local connection of the link is opened with it instead
     * of dialling `url` (same MQTT, same login, no socket). Absent: TCP to `url`.
     */
    dial?: LocalDialer
    /**
     * Publish what comes down on the session itself, not on a connection of its own. Only for a
     * local broker that is not a uns-bridge gateway (benchmarks between two Mosquittos): its
     * no-local knows one connection, so it would echo the other's publishes back up. The price:
     * a `both` link under sustained load each way can stall (see connectLocalSession).
     */
    inboundOnSession?: boolean
  }
  /** Stable per upstream: the gateway keeps this session's queue while the bridge is down. */
  localClientId: string
  upstreamClientId: string
  window: number
  backoffBaseMs?: number
  backoffMaxMs?: number
  /** Checked before each connect: false once this supervisor no longer holds the lease. */
  mayConnect?: () => boolean
  /** thin-edge topic root for the link's health (link-health.ts); none when absent or empty. */
  healthRoot?: string
  /** This instance's file service as its devices reach it: tedgeUrls coming down are rewritten to it (file-urls.ts). */
  filesUrl?: () => string | undefined
  /** The upstream's HTTP base (its file service): tedgeUrls going up are rewritten to it. */
  upstreamFilesUrl?: string
  /** The stray-cycle guard; none by default (see dup-guard.ts for why). */
  dupGuard?: DupGuard
  /** The end-to-end canary (canary.ts): its interval and the connection it is sent on; off when absent. */
  canary?: { intervalMs: number; publisher: CanaryPublisher }
  onChange?: () => void
  log: Logger
}

/** One link's state, shared by the steps that open and close it. */
export interface Link extends FilterState {
  readonly options: CreateBridgeLinkOptions
  /** To the link's machine (`bridge.connected`, `bridge.failed`, `bridge.stop`). */
  readonly send: (event: BridgeEvent) => void
  /** Bumped by every open and close: a step of an older attempt finds it changed and gives up. */
  gen: number
  /** The connections of the attempt that reached Forwarding (or is subscribing). */
  fw: ForwardWindow | undefined
  /** What comes down (bindings `in`, `both`); none when no binding brings anything in. */
  inbound: Inbound | undefined
  /** The local connection what comes down is published on (with `inbound`). */
  localIn: MqttSession | undefined
  health: LinkHealth | undefined
  canary: LinkCanary | undefined
  /** Stopping on purpose: the session stays paused whatever the window would like. */
  draining: boolean
  /** Which of the local gateways the next attempt dials; moves on after a failure there. */
  localTurn: number
  /** Forwarded by the windows of earlier connections. */
  forwardedBefore: number
  unrouted: number
  closing: Promise<void>
}

/** What one connect attempt has opened so far. */
export interface Attempt {
  readonly gen: number
  credentials?: Credentials
  upstream?: UpstreamSession
  window?: ForwardWindow
  inbound?: Inbound
  local?: MqttSession
  /** Where what comes down is published locally (contracts/links.ts `inboundClientIdOf`). */
  localIn?: MqttSession
  /** The link holds the connections now: closing them is `closeLink`'s job. */
  handedOver: boolean
}
