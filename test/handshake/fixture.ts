import { randomBytes } from 'node:crypto'
import { Registry } from 'prom-client'
import { getConnInfo } from '@hono/node-server/conninfo'
import { createInProcessBus } from '../../services/common/bus/index.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { silentLogger, type Logger } from '../../services/common/log.ts'
import {
  createApp,
  createRemoteClient,
  startAuditWatch,
  startExpirySweeper,
  startPoller,
  type AuditWatch,
  type ExpirySweeper,
  type Poller,
} from '../../services/handshake/index.ts'
import type { PendingLimits } from '../../services/contracts/store.ts'
import type { DbKind } from '../../db/client.ts'
import { sha256Hex } from '../../services/handshake/secret.ts'
import { tlsFetch } from '../../services/contracts/tls-fetch.ts'
import { serveHttp, type HttpServer } from '../../services/launch/runtime/node.ts'
import { startStore, createStoreClient, type StoreClient } from '../../services/store/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'

/**
 * One instance's handshake API in this process: a in-process bus, a real store on PGlite, the app
 * on a real loopback socket. Two of them talk to each other over HTTP like two instances.
 */
export interface Node {
  url: string
  token: string
  instanceId: string
  bus: Bus
  store: StoreClient
  poller: Poller
  app: { request(path: string, init?: RequestInit): Response | Promise<Response> }
  /** fetch against the socket with the admin token (unless `headers.authorization` is given). */
  api(path: string, init?: RequestInit & { json?: unknown }): Promise<Response>
  /** `api` then parse JSON, failing on a non-2xx answer. */
  call<T = any>(path: string, init?: RequestInit & { json?: unknown }): Promise<T>
  /** Bus subscriptions open now on `evt.>` subjects (SSE streams and the poller hold them). */
  liveSubscriptions(): number
  /** The registry /metrics serves. */
  metrics: Registry
  /** The store's database, for tests that edit rows behind its back. */
  db: TestDb
  audit?: AuditWatch
  expiry?: ExpirySweeper
  /** Stop the store's bus handlers (the bus stays): every store call then has no responders. */
  stopStore(): Promise<void>
  close(): Promise<void>
}

export interface NodeOptions {
  pollMs?: number
  slowPollMs?: number
  rate?: { perMinute: number; burst: number }
  trustProxy?: boolean
  ssePingMs?: number
  /** Listen on this port (default: any free one). */
  port?: number
  /** Serve https with this certificate. */
  tls?: { cert: string; key: string }
  /** The store's database (default PGlite). */
  dbKind?: DbKind
  pendingLimits?: PendingLimits
  sseQueueMax?: number
  /** Start the periodic chain check (off by default). */
  audit?: { intervalMs: number; recheckRows: number }
  /** Start the Pending expiry sweeper with this TTL (off by default). */
  pendingTtlMs?: number
  /** Where the node logs (default: nowhere). */
  log?: Logger
}

export async function startNode({
  pollMs = 50,
  slowPollMs = 300,
  rate = { perMinute: 6_000, burst: 1_000 },
  trustProxy = false,
  ssePingMs,
  port = 0,
  tls,
  dbKind = 'pglite',
  pendingLimits,
  sseQueueMax,
  audit: auditOptions,
  pendingTtlMs,
  log = silentLogger(),
}: NodeOptions = {}): Promise<Node> {
  const bus = createInProcessBus({ prefix: 'ht' + randomBytes(4).toString('hex') })
  // Count transition subscriptions, so tests can see an SSE stream let go of its own.
  let live = 0
  const subscribe = bus.subscribe.bind(bus)
  bus.subscribe = async (subject, handler, options) => {
    const sub = await subscribe(subject, handler, options)
    if (!subject.startsWith('evt.')) return sub
    live += 1
    let done = false
    return {
      unsubscribe: async () => {
        if (!done) live -= 1
        done = true
        await sub.unsubscribe()
      },
    }
  }
  let tdb: TestDb | undefined
  let server: HttpServer | undefined
  let poller: Poller | undefined
  let storeSvc: Awaited<ReturnType<typeof startStore>> | undefined
  let audit: AuditWatch | undefined
  let expiry: ExpirySweeper | undefined
  const metrics = new Registry()
  const close = async () => {
    await server?.close()
    await audit?.close()
    await expiry?.close()
    await poller?.close()
    await storeSvc?.close()
    await bus.close()
    await tdb?.close()
  }
  try {
    tdb = await createTestDb(dbKind)
    storeSvc = await startStore({ bus, db: tdb.db, log })
    const store = createStoreClient({ bus })
    const instanceId = storeSvc.instance.instanceId
    const token = 'ubt_' + randomBytes(16).toString('hex')
    const remote = createRemoteClient({ timeoutMs: 2_000 })
    poller = await startPoller({ store, bus, remote, log, instanceId, pollMs, slowPollMs })
    if (auditOptions) audit = startAuditWatch({ store, log, metrics, ...auditOptions })
    if (pendingTtlMs !== undefined) expiry = startExpirySweeper({ store, log, ttlMs: pendingTtlMs })
    const app = createApp({
      store,
      bus,
      log,
      instanceId,
      remote,
      poller,
      remoteAddress: (c) => getConnInfo(c).remote.address,
      trustProxy,
      adminTokenHash: sha256Hex(token),
      ready: async () => ({ ok: true, checks: { store: true } }),
      metrics,
      version: '0.0.0-test',
      services: ['store', 'handshake'],
      rate,
      ...(ssePingMs === undefined ? {} : { ssePingMs }),
      ...(pendingLimits === undefined ? {} : { pendingLimits }),
      ...(sseQueueMax === undefined ? {} : { sseQueueMax }),
      ...(audit === undefined ? {} : { auditAlarms: audit }),
    })
    server = await serveHttp({
      fetch: app.fetch,
      port,
      hostname: '127.0.0.1',
      ...(tls ? { tls } : {}),
    })
    const url = `${tls ? 'https' : 'http'}://127.0.0.1:${server.port}`
    const api = (path: string, init: RequestInit & { json?: unknown } = {}) => {
      const headers = new Headers(init.headers)
      if (!headers.has('authorization')) headers.set('authorization', `Bearer ${token}`)
      let body = init.body
      if (init.json !== undefined) {
        headers.set('content-type', 'application/json')
        body = JSON.stringify(init.json)
      }
      return (tls ? tlsFetch({ ca: tls.cert }) : fetch)(url + path, {
        ...init,
        headers,
        body: body ?? null,
      })
    }
    const call = async (path: string, init?: RequestInit & { json?: unknown }) => {
      const res = await api(path, init)
      const text = await res.text()
      if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${path} → ${res.status} ${text}`)
      return JSON.parse(text)
    }
    const stopStore = async () => {
      await storeSvc?.close()
    }
    return {
      url,
      token,
      instanceId,
      bus,
      store,
      poller,
      app,
      api,
      call,
      liveSubscriptions: () => live,
      metrics,
      db: tdb,
      ...(audit ? { audit } : {}),
      ...(expiry ? { expiry } : {}),
      stopStore,
      close,
    }
  } catch (err) {
    await close()
    throw err
  }
}

/** Poll `fn` until it returns a truthy value (or throw after `timeoutMs`). */
export async function waitFor<T>(
  fn: () => Promise<T> | T,
  { timeoutMs = 10_000, stepMs = 25 } = {}
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v as NonNullable<T>
      last = v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline)
      throw new Error(
        `waitFor timed out; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`
      )
    await new Promise((r) => setTimeout(r, stepMs))
  }
}

/** Read a server-sent event stream until `until` says stop; returns the parsed events. */
export async function readSse(
  url: string,
  {
    token,
    lastEventId,
    until,
    timeoutMs = 10_000,
  }: {
    token: string
    lastEventId?: string
    until: (events: SseEvent[]) => boolean
    timeoutMs?: number
  }
): Promise<SseEvent[]> {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), timeoutMs)
  const headers: Record<string, string> = { authorization: `Bearer ${token}` }
  if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
  const events: SseEvent[] = []
  try {
    const res = await fetch(url, { headers, signal: ac.signal })
    if (res.status !== 200) throw new Error(`SSE answered ${res.status}: ${await res.text()}`)
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
    let buf = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buf += value
      let i: number
      while ((i = buf.indexOf('\n\n')) !== -1) {
        const block = buf.slice(0, i)
        buf = buf.slice(i + 2)
        const ev: SseEvent = { event: 'message', data: '' }
        for (const line of block.split('\n')) {
          const [k, ...rest] = line.split(':')
          const v = rest.join(':').replace(/^ /, '')
          if (k === 'id') ev.id = v
          else if (k === 'event') ev.event = v
          else if (k === 'data') ev.data += v
        }
        events.push(ev)
        if (until(events)) {
          ac.abort()
          return events
        }
      }
    }
    return events
  } catch (err) {
    if (ac.signal.aborted && until(events)) return events
    throw new Error(`SSE read failed after ${events.length} events: ${(err as Error).message}`)
  } finally {
    clearTimeout(timer)
  }
}

export interface SseEvent {
  id?: string
  event: string
  data: string
}

/** A loopback port nobody listens on right now. */
export { freePort } from '../../deploy/free-port.ts'
