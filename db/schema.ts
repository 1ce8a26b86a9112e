import { sql } from 'drizzle-orm'
import {
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uniqueIndex,
} from 'drizzle-orm/pg-core'
import type { EventActor, TlsOptions } from '../services/contracts/store.ts'
import type { PersistedSnapshot } from '../machines/index.ts'

const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' })

/**
 * The hash of the machine's last log row, written with the snapshot. It must live on the
 * machine row: under READ COMMITTED, `SELECT … FOR UPDATE` that waited for a lock returns the
 * row's newest version, but a subquery on the log in the same statement still sees the old
 * snapshot, and chained to a stale hash under concurrency (found by the replicas test).
 * Null only for rows written before migration 0001; the store then reads the log.
 */
const headHash = () => text('head_hash')

/** The columns of a row that holds a persisted machine: its snapshot, state and version. */
const machineRow = () => ({
  snapshot: jsonb('snapshot').$type<PersistedSnapshot>().notNull(),
  state: text('state').notNull(),
  /** Version: the seq of the machine's last transition; every write checks it. */
  seq: integer('seq').notNull(),
  headHash: headHash(),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
})

/** This instance: exactly one row, made at first start (ARCHITECTURE.md §11). */
export const instance = pgTable(
  'instance',
  {
    instanceId: text('instance_id').primaryKey(),
    // Only the hash: a database dump must not let anyone call the operator API.
    adminTokenHash: text('admin_token_hash').notNull(),
    // A constant unique column is what keeps the table at one row (a second insert conflicts).
    singleton: boolean('singleton').notNull().default(true).unique(),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
  },
  (t) => [check('instance_singleton', sql`${t.singleton}`)]
)

/** This instance's upstreams (downstream side) with the Upstream machine's snapshot. */
export const upstreams = pgTable('upstreams', {
  id: text('id').primaryKey(),
  kind: text('kind').notNull(),
  host: text('host').notNull(),
  brokerPort: integer('broker_port').notNull(),
  httpPort: integer('http_port').notNull(),
  // The secret is ours: we present it in plain text as the MQTT password when the bridge
  // connects, so we must be able to read it back. Only its hash leaves this instance (the
  // upstream server keeps that), which is where hashing protects it.
  secret: text('secret'),
  username: text('username'),
  tls: jsonb('tls').$type<TlsOptions>(),
  remoteRequestId: text('remote_request_id'),
  lastError: text('last_error'),
  /** Deleted while its server could not be reached: the poller withdraws the request later. */
  withdrawalOwed: boolean('withdrawal_owed').notNull().default(false),
  ...machineRow(),
})

/** Requests other instances sent us (upstream-server side). */
export const incomingRequests = pgTable(
  'incoming_requests',
  {
    id: text('id').primaryKey(),
    instanceId: text('instance_id').notNull(),
    sourceIp: text('source_ip').notNull(),
    /** sha-256 hex of the downstream's secret, as the downstream sent it. */
    secretHash: text('secret_hash').notNull(),
    /** The source IP's network (IPv6 /64, IPv4 address): Pending requests are capped per network. */
    sourceNetwork: text('source_network'),
    ...machineRow(),
  },
  (t) => [
    // One live request per instance and secret: a repeated request.create finds it. Another
    // secret gets a request of its own, so a squatter cannot hold an instance ID (README.md).
    uniqueIndex('incoming_requests_live_secret')
      .on(t.instanceId, t.secretHash)
      .where(sql`${t.state} in ('Pending', 'Accepted')`),
    // At most one Accepted per instance: its bridges share one client-id namespace.
    uniqueIndex('incoming_requests_accepted_instance')
      .on(t.instanceId)
      .where(sql`${t.state} = 'Accepted'`),
    index('incoming_requests_state').on(t.state),
  ]
)

/** The audit log: one row per transition, hash-chained per machine (ARCHITECTURE.md §6). */
export const transitions = pgTable(
  'transitions',
  {
    /** Commit order across all machines: SSE resumes from it (`Last-Event-ID`). */
    globalSeq: bigserial('global_seq', { mode: 'number' }).primaryKey(),
    machine: text('machine').notNull(),
    machineId: text('machine_id').notNull(),
    seq: integer('seq').notNull(),
    event: jsonb('event').$type<{ type: string } & Record<string, unknown>>().notNull(),
    actor: jsonb('actor').$type<EventActor>().notNull(),
    fromState: text('from_state'),
    toState: text('to_state').notNull(),
    snapshot: jsonb('snapshot').$type<PersistedSnapshot>().notNull(),
    machineVersion: integer('machine_version').notNull(),
    at: timestamptz('at').notNull(),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
    /**
     * The caller's key for the write that made this row (store-client.ts): a retry of the same
     * write, on this replica or another, finds it and gets this row back instead of a second.
     * Not part of the hash: it says how the row was asked for, not what happened.
     */
    requestKey: text('request_key'),
  },
  (t) => [
    unique('transitions_machine_seq').on(t.machine, t.machineId, t.seq),
    uniqueIndex('transitions_request_key')
      .on(t.requestKey)
      .where(sql`${t.requestKey} is not null`),
  ]
)

/**
 * thin-edge.io digital twin: one row per registered `te/` entity, fed by the gateways
 * (services/gateway/edge/te-twin-feed.ts) and served as thin-edge's entity API. Bounded by
 * TE_MAX_ENTITIES (services/contracts/te-entities.ts).
 */
export const teEntities = pgTable(
  'te_entities',
  {
    /**
     * Whose entity: '' for this instance's own `te/`, else the instance id of the downstream
     * whose bridge mirrored it into one of its mounts (`te_mounts`).
     */
    downstream: text('downstream').notNull().default(''),
    /** The four identifier segments, e.g. `device/child01//`. */
    topicId: text('topic_id').notNull(),
    /** A downstream's entity: the full topic it is reached at here (`acme/site1/te/device/c1//`). */
    topic: text('topic'),
    type: text('type').notNull(),
    parent: text('parent'),
    externalId: text('external_id'),
    /** `@health`: the service reporting a child device's health. */
    healthEndpoint: text('health_endpoint'),
    /** The registration's non-reserved keys, then each `twin/<fragment>` value. */
    twin: jsonb('twin').$type<Record<string, unknown>>().notNull().default({}),
    /** `status` of the last `status/health` message. */
    health: text('health'),
    lastMeasurementAt: timestamptz('last_measurement_at'),
    /** Open alarms by type. */
    alarms: jsonb('alarms')
      .$type<
        Record<string, { severity: string | null; text: string | null; time: string | null }>
      >()
      .notNull()
      .default({}),
    /** Commands not cleared yet, by `<operation>/<id>`: their last status. */
    commands: jsonb('commands').$type<Record<string, string>>().notNull().default({}),
    registeredAt: timestamptz('registered_at').notNull().defaultNow(),
    updatedAt: timestamptz('updated_at').notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.downstream, t.topicId] }),
    index('te_entities_parent').on(t.downstream, t.parent),
  ]
)

/**
 * Where each downstream mounts its thin-edge.io `te/` tree in this instance's namespace (its
 * bindings from its teRoot, as its supervisor declares them in the topology exchange), kept only
 * while its request is Accepted and only inside its grants; at most TE_MAX_MOUNTS each.
 */
export const teMounts = pgTable('te_mounts', {
  instanceId: text('instance_id').primaryKey(),
  requestId: text('request_id').notNull(),
  /** `[{target, path}]`: `<target>/<rest>` here is `<teRoot>/<path>/<rest>` there. */
  mounts: jsonb('mounts').$type<{ target: string; path: string }[]>().notNull(),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
})
