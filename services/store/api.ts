/**
 * The binding store's API over the bus: the only way other services read or change
 * upstreams, incoming requests and the transition log. Subjects are `store.<verb>` (queue
 * group `binding-store`); every committed transition is published on
 * `evt.<machine>.<id>.transition` with the log row as its body, including its `globalSeq`
 * (SSE uses it as the event id and to dedupe replay against live events).
 */
import type { Binding, MachineKind, PersistedSnapshot, UpstreamKind } from '../../machines/index.ts'

export const STORE_QUEUE = 'binding-store'
export const storeSubject = (verb: StoreVerb): string => `store.${verb}`
export const transitionSubject = (machine: MachineKind | '*', id: string): string =>
  `evt.${machine}.${id}.transition`
/** All transitions of all machines: what SSE and the supervisor listen to. */
export const ALL_TRANSITIONS = 'evt.*.*.transition'

export type ActorKind = 'operator' | 'remote' | 'system'
/** Who sent an event: recorded in the log for audit. */
export interface EventActor {
  kind: ActorKind
  id?: string
  ip?: string
}

export interface TlsOptions {
  ca?: string
  cert?: string
  key?: string
  servername?: string
  rejectUnauthorized?: boolean
}

export interface Upstream {
  id: string
  kind: UpstreamKind
  /** `mqtt://host`, `mqtts://host`, `ws://host`, `wss://host` */
  host: string
  brokerPort: number
  httpPort: number
  status: string
  active: boolean
  bindings: Binding[]
  grants: string[]
  /** The request id the upstream server gave us (handshake upstreams). */
  remoteRequestId: string | null
  lastError: string | null
  /** Deleted while its server could not be reached: its request is still to be withdrawn. */
  withdrawalOwed: boolean
  username: string | null
  tls: TlsOptions | null
  seq: number
  createdAt: string
  updatedAt: string
}

export interface IncomingRequest {
  id: string
  instanceId: string
  sourceIp: string
  status: string
  grants: string[]
  seq: number
  createdAt: string
  updatedAt: string
}

export interface TransitionRecord {
  machine: MachineKind
  machineId: string
  seq: number
  event: { type: string } & Record<string, unknown>
  actor: EventActor
  from: string | null
  to: string
  snapshot: PersistedSnapshot
  machineVersion: number
  at: string
  prevHash: string
  hash: string
  /** Position in the global commit order (what SSE sends as the event id). Set by the store. */
  globalSeq?: number
}

export interface Page<T> {
  items: T[]
  /** Pass as `after` to get the next page; null at the end. */
  next: number | null
}

export interface ReplayResult {
  machine: MachineKind
  machineId: string
  to: number
  snapshot: PersistedSnapshot
  /** True when replaying the whole log reproduced the stored snapshot. */
  matchesStored: boolean | null
  verify: VerifyResult
}

export interface VerifyResult {
  ok: boolean
  rows: number
  /** The first row that was changed, inserted or deleted. */
  firstBadSeq?: number
  problem?: 'changed' | 'inserted' | 'deleted' | 'snapshot_mismatch'
  message?: string
}

export interface CreateUpstreamInput {
  kind?: UpstreamKind
  host: string
  brokerPort: number
  httpPort: number
  /** Handshake upstreams: the secret we present as MQTT password. Plain MQTT: the password. */
  secret?: string
  username?: string
  tls?: TlsOptions
  actor: EventActor
}

export interface CreateRequestInput {
  instanceId: string
  secretHash: string
  sourceIp: string
  actor: EventActor
}

export interface SendEventInput {
  machine: MachineKind
  id: string
  event: { type: string } & Record<string, unknown>
  actor: EventActor
}

export interface InstanceInfo {
  instanceId: string
  createdAt: string
  /**
   * The operator token in plain text: only in the answer that created the instance with a
   * generated token, so the launcher can print it once. The store keeps only its sha-256.
   */
  adminToken?: string
}

/** Request/response pairs, by verb. */
export interface StoreApi {
  /** Creates the instance on first call. `adminToken` (from config) replaces the stored token's hash. */
  'instance.get': { in: { adminToken?: string }; out: InstanceInfo }
  /** Operator auth: constant-time check of a bearer token against the stored hash. */
  'instance.verifyAdminToken': { in: { token: string }; out: { ok: boolean } }
  'upstream.create': { in: CreateUpstreamInput; out: Upstream }
  /** Non-audited fields: lastError, remoteRequestId, withdrawalOwed. */
  'upstream.patch': {
    in: {
      id: string
      lastError?: string | null
      remoteRequestId?: string | null
      withdrawalOwed?: boolean
    }
    out: Upstream
  }
  'upstream.get': { in: { id: string }; out: Upstream }
  'upstream.list': { in: { status?: string }; out: Upstream[] }
  /** The secret for the bridge's MQTT password (supervisor only). */
  'upstream.credentials': {
    in: { id: string }
    out: { username: string | null; password: string | null }
  }
  'request.create': { in: CreateRequestInput; out: { request: IncomingRequest; created: boolean } }
  'request.get': { in: { id: string }; out: IncomingRequest }
  'request.list': { in: { status?: string }; out: IncomingRequest[] }
  /**
   * Handshake API: the stored sha-256 hex of a request's secret, whatever its state, so the
   * downstream's `Bearer <secret>` can be checked (in constant time, by the caller) on status
   * polls and on withdrawal. Throws not_found for an unknown id.
   */
  'request.secretHash': { in: { id: string }; out: { secretHash: string } }
  /** Gateway: check a bridge's MQTT credentials; returns its grants when accepted. */
  'request.authenticate': {
    in: { instanceId: string; secret: string }
    out: { ok: boolean; requestId?: string; grants?: string[] }
  }
  event: { in: SendEventInput; out: TransitionRecord }
  log: {
    in: { machine: MachineKind; id: string; after?: number; limit?: number }
    out: Page<TransitionRecord>
  }
  /** All machines' transitions in commit order, for SSE resumption (`Last-Event-ID`). */
  'log.global': {
    in: { after?: number; limit?: number }
    out: Page<TransitionRecord & { globalSeq: number }>
  }
  replay: { in: { machine: MachineKind; id: string; to?: number }; out: ReplayResult }
  verify: { in: { machine: MachineKind; id: string }; out: VerifyResult }
}

export type StoreVerb = keyof StoreApi
