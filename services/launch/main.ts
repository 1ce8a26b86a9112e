import { join } from 'node:path'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { createBus } from '../common/bus/index.ts'
import type { Bus } from '../common/bus/bus.ts'
import type { Config } from '../common/config.ts'
import type { RunningService, ServiceContext } from '../contracts/service.ts'
import { ConfigError, UbError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import { createOpsRoutes } from '../common/ops-routes.ts'
import { readTlsMaterial } from '../common/pem.ts'
import { serveHttp } from './runtime/node.ts'
import { createStoreClient, type StoreClient } from '../contracts/store-client.ts'
import { resolveAdminToken, type AdminToken } from './admin-token.ts'
import { listenWithFallback } from './listen.ts'
import { lockDataDir } from './data-lock.ts'
import { registerJournalMetrics } from './journal-metrics.ts'
import { resolveSecretKeys } from './secret-key.ts'

export interface Fabric {
  instanceId: string
  /** Null in a process that runs neither the store nor the handshake API: it needs none. */
  adminToken: string | null
  adminTokenCreated: boolean
  httpUrl: string
  mqttUrl: string | null
  endpoints: string[]
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

const STORE_WAIT_MS = 30_000 // a service started before the store waits this long for it

type FetchHandler = (req: Request, env?: object) => Response | Promise<Response>

/** Start the services named in the config in this process: the embedded default runs all four. */
export async function startFabric({
  config,
  explicit,
  log,
}: {
  config: Config
  explicit: ReadonlySet<string>
  log: Logger
}): Promise<Fabric> {
  const stops = createStopList(log)
  try {
    const wants = new Set(config.services)
    lockDataDirIfStateful(config, wants, stops)
    const bus = await createBus({
      natsUrl: config.natsUrl,
      prefix: config.busPrefix,
      log,
      dataDir: join(config.dataDir, 'bus'),
      journalMaxRecordBytes: config.busJournalMaxRecordBytes,
      replicas: config.busReplicas,
    })
    stops.add(() => bus.close())
    const metrics = new Registry()
    collectDefaultMetrics({ register: metrics })
    if (bus.kind === 'in-process') registerJournalMetrics(metrics)
    if (wants.has('store')) await startStoreHere(config, bus, log, stops)

    const store = createStoreClient({ bus })
    const admin = operatorToken(config)
    // The store keeps the token's hash too (the configured or file token replaces it), so the
    // instance row and every handshake replica agree on one token.
    const instance = await waitForStore(store, log, admin?.token)
    const ctx: ServiceContext = {
      config,
      explicit,
      bus,
      store,
      log,
      instanceId: instance.instanceId,
      metrics,
    }
    const services: RunningService[] = []
    const started = (svc: RunningService) => {
      services.push(svc)
      stops.add(() => svc.close())
    }
    const mqttPort = await startBrokerAndBridges(ctx, wants, started)
    const fetch = await startHttpApp(ctx, wants, started, admin)
    const httpTls = config.httpTls ? readTlsMaterial(config, 'httpTls') : undefined
    const http = await listenWithFallback({
      key: 'httpPort',
      port: config.httpPort,
      explicit,
      log,
      listen: (port) =>
        serveHttp({ fetch, port, hostname: config.httpHost, ...(httpTls ? { tls: httpTls } : {}) }),
    })
    stops.add(() => http.close())

    const host = displayHost(config.httpHost)
    const httpUrl = `${httpTls ? 'https' : 'http'}://${host}:${http.port}`
    const mqttUrl = mqttPort === null ? null : `mqtt://${displayHost(config.mqttHost)}:${mqttPort}`
    // Each line names what it is: `http http://…`, `mqtt mqtt://…`, `ws ws://…`.
    const labelled = (url: string) => `${url.slice(0, url.indexOf(':'))} ${url}`
    const endpoints = [httpUrl, ...services.flatMap((s) => s.endpoints)].map(labelled)
    let closing: Promise<void> | undefined
    const stop = () => (closing ??= stops.stopAll())
    return {
      instanceId: instance.instanceId,
      adminToken: admin?.token ?? instance.adminToken ?? null,
      adminTokenCreated: admin?.created ?? instance.adminToken !== undefined,
      httpUrl,
      mqttUrl,
      endpoints,
      close: stop,
      [Symbol.asyncDispose]: stop,
    }
  } catch (err) {
    await stops.stopAll()
    throw err
  }
}

/** What to stop, in start order; `stopAll` stops each once, last started first. */
function createStopList(log: Logger) {
  const stops: Array<() => Promise<void>> = []
  return {
    add(stop: () => Promise<void>): void {
      stops.push(stop)
    },
    async stopAll(): Promise<void> {
      // Reverse start order: HTTP and bridges stop before the store and the bus they use.
      for (const fn of stops.splice(0).reverse()) {
        await fn().catch((err: unknown) => log.error({ err }, 'error while stopping'))
      }
    },
  }
}

type StopList = ReturnType<typeof createStopList>

function lockDataDirIfStateful(config: Config, wants: Set<string>, stops: StopList): void {
  // PGlite and the in-process bus keep their state in the data folder.
  const keepsState = !config.natsUrl || (wants.has('store') && !config.databaseUrl)
  if (!keepsState) return
  const lock = lockDataDir(config.dataDir)
  stops.add(async () => lock.release())
}

/** The binding store in this process, on its database migrated first. */
async function startStoreHere(config: Config, bus: Bus, log: Logger, stops: StopList) {
  const { createDb } = await import('../../db/client.ts')
  const { migrateDb } = await import('../../db/migrate.ts')
  const { startStore } = await import('../store/index.ts')
  const secretKeys = resolveSecretKeys(config, log) // before the database: a missing key stops here
  const db = await createDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir })
  stops.add(() => db.close())
  await migrateDb(db)
  const store = await startStore({ bus, db, log, secretKeys })
  stops.add(() => store.close())
}

/** The gateway, then the supervisor, bridging into that gateway when it runs here. The MQTT port, or null. */
async function startBrokerAndBridges(
  ctx: ServiceContext,
  wants: Set<string>,
  started: (svc: RunningService) => void
): Promise<number | null> {
  let mqttPort: number | null = null
  if (wants.has('gateway')) {
    const { startGateway } = await import('../gateway/index.ts')
    const gateway = await startGateway(ctx)
    mqttPort = gateway.ports.mqtt
    started(gateway)
  }
  if (wants.has('supervisor')) {
    const { startSupervisor } = await import('../supervisor/index.ts')
    const localBrokerUrl = mqttPort === null ? undefined : `mqtt://127.0.0.1:${mqttPort}`
    started(await startSupervisor(ctx, { localBrokerUrl }))
  }
  return mqttPort
}

/** What answers HTTP: the handshake API (ops routes included), or the ops routes alone. */
async function startHttpApp(
  ctx: ServiceContext,
  wants: Set<string>,
  started: (svc: RunningService) => void,
  admin: AdminToken | null
): Promise<FetchHandler> {
  const { bus, store, metrics } = ctx
  const ready = readiness(bus, store)
  // `env` carries node-server's socket: the handshake API reads the caller's IP from it.
  if (wants.has('handshake')) {
    const { startHandshake } = await import('../handshake/index.ts')
    const handshake = await startHandshake(ctx, { ready, adminTokenHash: admin!.hash })
    started(handshake)
    return (req, env) => handshake.app.fetch(req, env)
  }
  const ops = createOpsRoutes({
    ready,
    metrics,
    verifyToken: async (token) => (await store.call('instance.verifyAdminToken', { token })).ok,
  })
  return (req, env) => ops.fetch(req, env)
}

function displayHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
}

/**
 * The operator token, where this process needs one: from config; else, when the store and the
 * handshake API share this process (the embedded default), the data folder's token file. A
 * handshake API without the store cannot make a token its replicas would share, so it must be
 * given one; a store alone makes one at its first start and answers it once.
 */
function operatorToken(config: Config): AdminToken | null {
  const here = new Set(config.services)
  if (config.adminToken)
    return resolveAdminToken({ configured: config.adminToken, dataDir: config.dataDir })
  if (!here.has('handshake')) return null
  if (!here.has('store')) {
    throw new ConfigError(
      'adminToken',
      'must be set when the handshake API runs without the store in its process'
    )
  }
  return resolveAdminToken({ configured: undefined, dataDir: config.dataDir })
}

async function waitForStore(store: StoreClient, log: Logger, adminToken: string | undefined) {
  const deadline = Date.now() + STORE_WAIT_MS
  for (let attempt = 0; ; attempt++) {
    try {
      return await store.call('instance.get', adminToken ? { adminToken } : {})
    } catch (err) {
      const retriable =
        err instanceof UbError && ['no_responders', 'bus_timeout'].includes(err.code)
      if (!retriable || Date.now() > deadline) throw err
      if (attempt === 0) log.info('waiting for the binding store to answer on the bus')
      await new Promise((r) => setTimeout(r, Math.min(1_000, 100 * 2 ** attempt)))
    }
  }
}

function readiness(bus: Bus, store: StoreClient) {
  return async () => {
    const checks: Record<string, boolean> = {}
    checks.bus = await bus.flush().then(
      () => true,
      () => false
    )
    checks.store = await store.call('instance.get', {}).then(
      () => true,
      () => false
    )
    return { ok: Object.values(checks).every(Boolean), checks }
  }
}
