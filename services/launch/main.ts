import { join } from 'node:path'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { createBus } from '../common/bus/index.ts'
import type { Bus } from '../common/bus/bus.ts'
import type { Config } from '../common/config.ts'
import type { RunningService, ServiceContext } from '../contracts/service.ts'
import type { Logger } from '../common/log.ts'
import { createOpsRoutes } from '../common/ops-routes.ts'
import { startPresence, type MemberFacts } from '../common/presence.ts'
import { serveHttp } from './runtime/node.ts'
import { createStoreClient, type StoreClient } from '../contracts/store-client.ts'
import { matchesHash } from '../common/digest.ts'
import { keepMadeToken, operatorToken, type AdminToken } from './admin-token.ts'
import { listenWithFallback, rememberedMqttPort, rememberMqttPort } from './listen.ts'
import { lockDataDir } from './data-lock.ts'
import { registerJournalMetrics } from './journal-metrics.ts'
import { resolveSecretKeys } from './secret-key.ts'
import { preflight } from './preflight.ts'
import { natsFailure, postgresFailure } from './reach.ts'
import { joinInstance } from './store-wait.ts'

export interface Fabric {
  instanceId: string
  /** The one operator token every token check in this process accepts (admin-token.ts). */
  adminToken: string
  /** True when this start made it: the only time it is printed in full. */
  adminTokenCreated: boolean
  /** The data folder's token file it came from, or null when configured (`adminToken`). */
  adminTokenFile: string | null
  httpUrl: string
  mqttUrl: string | null
  endpoints: string[]
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

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
    const ownsDataDir = lockDataDirIfStateful(config, wants, stops)
    // Settings that can be checked alone fail here, before a server is dialled or a service starts.
    const admin = operatorToken(config, log)
    const { httpTls } = await preflight(config, explicit, wants)
    const bus = await createBus({
      natsUrl: config.natsUrl,
      prefix: config.busPrefix,
      log,
      dataDir: join(config.dataDir, 'bus'),
      journalMaxRecordBytes: config.busJournalMaxRecordBytes,
      replicas: config.busReplicas,
    }).catch((err: unknown) => {
      throw natsFailure(err, config.natsUrl ?? '')
    })
    stops.add(() => bus.close())
    const metrics = new Registry()
    collectDefaultMetrics({ register: metrics })
    if (bus.kind === 'in-process') registerJournalMetrics(metrics)
    const presence = await startPresence({
      bus,
      log,
      metrics,
      intervalMs: config.presenceIntervalMs,
    })
    stops.add(() => presence.close())
    if (wants.has('store')) {
      await startStoreHere(config, bus, log, stops, admin)
      presence.join('store')
    }

    const store = createStoreClient({ bus })
    const instance = await joinInstance(store, log, admin, config)
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
    const started: Started = (svc, facts) => {
      services.push(svc)
      stops.add(() => svc.close())
      presence.join(svc.name, facts)
    }
    // The file service's address for tedgeUrls coming down a bridge: known once HTTP listens.
    let filesUrl: string | undefined
    const mqttPort = await startBrokerAndBridges(ctx, wants, started, () => filesUrl, ownsDataDir)
    const fetch = await startHttpApp(ctx, wants, started, admin)
    const http = await listenWithFallback({
      key: 'httpPort',
      port: config.httpPort,
      explicit,
      log,
      listen: (port) =>
        serveHttp({ fetch, port, hostname: config.httpHost, ...(httpTls ? { tls: httpTls } : {}) }),
    })
    stops.add(() => http.close())
    keepMadeToken(admin)
    // Listed before the ready line; on shutdown, gone from the cluster view first (close is once).
    await presence.announce()
    stops.add(() => presence.close())

    const host = displayHost(config.httpHost)
    const httpUrl = `${httpTls ? 'https' : 'http'}://${host}:${http.port}`
    if (wants.has('handshake')) filesUrl = httpUrl
    const mqttUrl = mqttPort === null ? null : `mqtt://${displayHost(config.mqttHost)}:${mqttPort}`
    // Each line names what it is: `http http://…`, `mqtt mqtt://…`, `ws ws://…`.
    const labelled = (url: string) => `${url.slice(0, url.indexOf(':'))} ${url}`
    const endpoints = [httpUrl, ...services.flatMap((s) => s.endpoints)].map(labelled)
    let closing: Promise<void> | undefined
    const stop = () => (closing ??= stops.stopAll())
    return {
      instanceId: instance.instanceId,
      adminToken: admin.token,
      adminTokenCreated: admin.created,
      adminTokenFile: admin.file,
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
/** A service started: stopped with the others, and announced with its facts (common/presence.ts). */
type Started = (svc: RunningService, facts?: () => MemberFacts) => void

/** Lock the data folder when this process keeps state there; true when it did (the folder is its own). */
function lockDataDirIfStateful(config: Config, wants: Set<string>, stops: StopList): boolean {
  // PGlite and the in-process bus keep their state in the data folder.
  const keepsState = !config.natsUrl || (wants.has('store') && !config.databaseUrl)
  if (!keepsState) return false
  const lock = lockDataDir(config.dataDir)
  stops.add(async () => lock.release())
  return true
}

/** The binding store in this process, on its database migrated first. */
async function startStoreHere(
  config: Config,
  bus: Bus,
  log: Logger,
  stops: StopList,
  admin: AdminToken
) {
  const { createDb } = await import('../../db/client.ts')
  const { migrateDb } = await import('../../db/migrate.ts')
  const { startStore } = await import('../store/index.ts')
  const secretKeys = resolveSecretKeys(config, log) // before the database: a missing key stops here
  if (config.databaseUrl) {
    // One line naming databaseUrl for a wrong host, user or database, not the migrator's stack.
    const { checkDatabase } = await import('../../db/ensure-database.ts')
    const url = config.databaseUrl
    await checkDatabase(url).catch((err: unknown) => {
      throw postgresFailure(err, url)
    })
  }
  if (!config.databaseUrl) {
    const { seedPgliteDir } = await import('../../db/pglite-template.ts')
    await seedPgliteDir(config.dataDir) // a new folder starts as a copy of a migrated template
  }
  const db = await createDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir })
  stops.add(() => db.close())
  await migrateDb(db)
  // With the operator's token, a first start records its hash rather than a throwaway one's.
  const store = await startStore({ bus, db, log, secretKeys, adminToken: admin.token })
  stops.add(() => store.close())
}

/** The gateway, then the supervisor, bridging into that gateway when it runs here. The MQTT port, or null. */
async function startBrokerAndBridges(
  ctx: ServiceContext,
  wants: Set<string>,
  started: Started,
  filesUrl: () => string | undefined,
  ownsDataDir: boolean
): Promise<number | null> {
  let mqttPort: number | null = null
  let localDialer: import('../supervisor/index.ts').LocalDialer | undefined
  if (wants.has('gateway')) {
    const { startGateway, inProcessDialer } = await import('../gateway/index.ts')
    // A default port that was taken: the one fallen back to before, while it is free (README).
    const { config, explicit } = ctx
    const remembers = ownsDataDir && !explicit.has('mqttPort')
    const remembered = remembers ? rememberedMqttPort(config.dataDir) : undefined
    const gateway = await startGateway(
      remembered === undefined ? ctx : { ...ctx, config: { ...config, mqttPort: remembered } }
    )
    mqttPort = gateway.ports.mqtt
    // The co-located link: the supervisor below reads this gateway in process (README, Bridges).
    localDialer = inProcessDialer(gateway.gateway)
    if (remembers) rememberMqttPort(config.dataDir, mqttPort, config.mqttPort)
    started(gateway, () => {
      const { gatewayId, clients, ports } = gateway.gateway.stats()
      return { gateway: { gatewayId, clients, ports } }
    })
  }
  if (wants.has('supervisor')) {
    const { startSupervisor } = await import('../supervisor/index.ts')
    const localBrokerUrl = mqttPort === null ? undefined : `mqtt://127.0.0.1:${mqttPort}`
    const supervisor = await startSupervisor(ctx, { localBrokerUrl, localDialer, filesUrl })
    started(supervisor, () => ({
      supervisor: { supervisorId: supervisor.supervisorId, bridges: supervisor.bridges() },
    }))
  }
  return mqttPort
}

/** What answers HTTP: the handshake API (ops routes included), or the ops routes alone. */
async function startHttpApp(
  ctx: ServiceContext,
  wants: Set<string>,
  started: Started,
  admin: AdminToken
): Promise<FetchHandler> {
  const { bus, store, metrics } = ctx
  const ready = readiness(bus, store)
  // `env` carries node-server's socket: the handshake API reads the caller's IP from it.
  if (wants.has('handshake')) {
    const { startHandshake } = await import('../handshake/index.ts')
    const handshake = await startHandshake(ctx, { ready, adminTokenHash: admin.hash })
    started(handshake)
    return (req, env) => handshake.app.fetch(req, env)
  }
  // The process's own token, as the handshake API checks it: one story for every process.
  const ops = createOpsRoutes({
    ready,
    metrics,
    verifyToken: async (token) => matchesHash(token, admin.hash),
    ...(ctx.config.metricsToken ? { metricsToken: ctx.config.metricsToken } : {}),
  })
  return (req, env) => ops.fetch(req, env)
}

function displayHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
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
