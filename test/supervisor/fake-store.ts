import { Registry } from 'prom-client'
import type { Bus, Subscription } from '../../services/common/bus/bus.ts'
import { encodeJson } from '../../services/common/bus/bus.ts'
import { serveJson } from '../../services/common/bus/rpc.ts'
import type { ServiceContext } from '../../services/contracts/service.ts'
import { loadConfig } from '../../services/common/config.ts'
import { NotFoundError } from '../../services/common/errors.ts'
import { silentLogger } from '../../services/common/log.ts'
import { STORE_QUEUE, storeSubject, type Upstream } from '../../services/contracts/store.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'

/**
 * The four store verbs the supervisor uses, served from a table the test edits. Each edit
 * publishes a transition event, as the real store does after its commit.
 */
export interface FakeStore {
  upstreams: Map<string, Upstream>
  put(u: Partial<Upstream> & { id: string }): void
  set(id: string, change: Partial<Upstream>): void
  patches: Array<{ id: string; lastError?: string | null }>
  /** ms each `upstream.list` waits before answering: a slow or overloaded store. */
  listDelayMs: number
  close(): Promise<void>
}

export function upstreamRecord(u: Partial<Upstream> & { id: string }): Upstream {
  return {
    kind: 'uns',
    host: 'mqtt://127.0.0.1',
    brokerPort: 1883,
    httpPort: 80,
    status: 'Active',
    active: true,
    bindings: [],
    grants: ['#'],
    remoteRequestId: null,
    lastError: null,
    withdrawalOwed: false,
    username: null,
    tls: null,
    seq: 1,
    createdAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    ...u,
  }
}

export async function startFakeStore(
  bus: Bus,
  {
    credentials = { username: null, password: 'secret' },
  }: { credentials?: { username: string | null; password: string | null } } = {}
): Promise<FakeStore> {
  const upstreams = new Map<string, Upstream>()
  const patches: FakeStore['patches'] = []
  const get = (id: string) => {
    const u = upstreams.get(id)
    if (!u) throw new NotFoundError('upstream', id)
    return u
  }
  const q = { queue: STORE_QUEUE }
  const subs: Subscription[] = await Promise.all([
    serveJson<{ status?: string }, Upstream[]>(
      bus,
      storeSubject('upstream.list'),
      async ({ status }) => {
        if (fake.listDelayMs) await new Promise((r) => setTimeout(r, fake.listDelayMs))
        return [...upstreams.values()].filter((u) => !status || u.status === status)
      },
      q
    ),
    serveJson<{ id: string }, Upstream>(
      bus,
      storeSubject('upstream.get'),
      async ({ id }) => get(id),
      q
    ),
    serveJson<{ id: string }, typeof credentials>(
      bus,
      storeSubject('upstream.credentials'),
      async ({ id }) => (get(id), credentials),
      q
    ),
    serveJson<{ id: string; lastError?: string | null }, Upstream>(
      bus,
      storeSubject('upstream.patch'),
      async (p) => (patches.push(p), get(p.id)),
      q
    ),
  ])
  const announce = (u: Upstream) =>
    bus.publish(
      `evt.upstream.${u.id}.transition`,
      encodeJson({ machine: 'upstream', machineId: u.id, to: u.status, seq: u.seq })
    )
  const fake: FakeStore = {
    upstreams,
    patches,
    listDelayMs: 0,
    put(u) {
      const rec = upstreamRecord(u)
      upstreams.set(rec.id, rec)
      announce(rec)
    },
    set(id, change) {
      const rec = { ...get(id), ...change }
      rec.seq++
      if (rec.status === 'Deleted') upstreams.delete(id)
      else upstreams.set(id, rec)
      announce(rec)
    },
    close: async () => {
      await Promise.all(subs.map((s) => s.unsubscribe()))
    },
  }
  return fake
}

/** A ServiceContext for one supervisor under test. */
export function testContext(
  bus: Bus,
  overrides: Record<string, unknown> = {},
  instanceId = 'UB_down'
): ServiceContext {
  return {
    config: loadConfig({ env: {}, overrides }).config,
    explicit: new Set(),
    bus,
    store: createStoreClient({ bus, timeoutMs: 2_000 }),
    log: silentLogger(),
    instanceId,
    metrics: new Registry(),
  }
}
