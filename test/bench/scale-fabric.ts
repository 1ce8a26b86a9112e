/**
 * The fabric `npm run bench -- scale` measures: a private nats-server (JetStream, free port), a
 * Postgres database of its own, 1 store, 1 handshake API, up to 3 gateways and a set of
 * supervisors, each its own `uns-bridge start` process; a Mosquitto stands in for the cloud.
 * Gateways are started on demand (the count only grows); supervisors are made anew for each
 * configuration, each listing the configuration's gateways starting with its own.
 */
import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { decodeJson, type Bus, type KvBucket } from '../../services/common/bus/bus.ts'
import { LINKS_BUCKET, type LinkStatus } from '../../services/contracts/links.ts'
import { callApi } from '../chaos/fabric.ts'
import { defineService, type ServiceProcess, type ServiceSettings } from '../chaos/services.ts'
import { retry, sleep } from '../chaos/wait.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.ts'
import { startNatsServer, type NatsServer } from '../helpers/nats.ts'
import type { Api } from './scale-upstreams.ts'

export const MAX_GATEWAYS = 3
const STEADY_CHECKS = 4 // the same owners this many checks in a row (a second apart): settled

export interface ScaleFabric {
  nats: NatsServer
  cloud: Mosquitto
  /** The operator API (the handshake process). */
  api: Api
  /** Start gateways until `n` run; their MQTT URLs. */
  useGateways(n: number): Promise<string[]>
  /** `n` new supervisor processes over the first `n` gateways (started first). */
  startSupervisors(n: number): Promise<ServiceProcess[]>
  /** SIGTERM every supervisor: each hands its leases back. */
  stopSupervisors(): Promise<void>
  /**
   * Wait until every link forwards under a running supervisor, then until no link moved for a
   * few seconds (or `timeoutMs` passed: `settled` false); links per supervisor label.
   */
  forwardingSpread(
    ids: string[],
    timeoutMs: number
  ): Promise<{ spread: Record<string, number>; settled: boolean }>
  /** Wait until no link forwards (after deactivation). */
  allStopped(ids: string[], timeoutMs: number): Promise<void>
  close(): Promise<void>
}

export async function startScaleFabric(cloudConfig: string): Promise<ScaleFabric> {
  const closers: Array<() => Promise<unknown>> = []
  const services: ServiceProcess[] = []
  let supervisors: ServiceProcess[] = []
  const close = async () => {
    await Promise.all(services.map((s) => Promise.race([s.stop(), sleep(15_000).then(s.kill)])))
    await Promise.all(services.map((s) => rm(s.dataDir, { recursive: true, force: true })))
    for (const c of closers.splice(0).reverse()) await c().catch(() => {})
  }
  try {
    const nats = await startNatsServer()
    closers.push(() => nats.stop())
    const cloud = await startMosquitto({ config: cloudConfig })
    closers.push(() => cloud.stop())
    const db: TestDb = await createTestDb('postgres', { migrate: false })
    closers.push(() => db.close())
    const adminToken = 'ubt_scale_' + randomBytes(12).toString('hex')
    const settings: ServiceSettings = {
      env: {
        NATS_URL: nats.url,
        DATABASE_URL: db.databaseUrl!,
        UB_BUS_PREFIX: 'scale',
        UB_ADMIN_TOKEN: adminToken,
        UB_SECRET_KEY: randomBytes(32).toString('base64'),
      },
      args: [],
    }
    const define = async (...args: Parameters<typeof defineService>) => {
      const s = await defineService(...args)
      services.push(s)
      return s
    }
    const store = await define('store', 0, settings)
    await store.start()
    const gateways: ServiceProcess[] = []
    for (let i = 0; i < MAX_GATEWAYS; i++) gateways.push(await define('gateway', i, settings))
    const handshake = await define('handshake', 0, settings)
    await handshake.start()
    const bus: Bus = await connectNatsBus({ servers: nats.url, prefix: 'scale' })
    closers.push(() => bus.close())
    const links: KvBucket = await bus.kv(LINKS_BUCKET)

    const useGateways = async (n: number) => {
      await Promise.all(gateways.slice(0, n).map((g) => g.start()))
      return gateways.slice(0, n).map((g) => g.mqttUrl!)
    }
    /** Each link's owning supervisor label, or why it has none yet. */
    const owners = async (ids: string[]) => {
      const owner = new Map<string, string>()
      for (const id of ids) {
        const entry = await links.get(id)
        const link = entry?.operation === 'PUT' ? decodeJson<LinkStatus>(entry.value) : undefined
        // A supervisor id carries its process id: `<instance>-<host>-<pid>-<random>`.
        const by = supervisors.find(
          (s) => s.pid !== undefined && link?.owner.includes(`-${s.pid}-`)
        )
        if (link?.state !== 'Forwarding' || !by)
          throw new Error(`${id}: ${link?.state ?? 'no link'}`)
        owner.set(id, by.label)
      }
      return owner
    }

    return {
      nats,
      cloud,
      api: (method, path, body) =>
        callApi(handshake.httpUrl, adminToken, path, {
          method,
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        }),
      useGateways,
      async startSupervisors(n) {
        const urls = await useGateways(n)
        const made = await Promise.all(
          Array.from({ length: n }, (_, i) => {
            const list = [...urls.slice(i), ...urls.slice(0, i)].join(',')
            return define('supervisor', supervisors.length + i, settings, () => [
              '--local-broker-url',
              list,
            ])
          })
        )
        supervisors.push(...made)
        await Promise.all(made.map((s) => s.start()))
        return made
      },
      async stopSupervisors() {
        await Promise.all(supervisors.map((s) => s.stop()))
        await Promise.all(supervisors.map((s) => rm(s.dataDir, { recursive: true, force: true })))
        for (const s of supervisors) services.splice(services.indexOf(s), 1)
        supervisors = []
      },
      async forwardingSpread(ids, timeoutMs) {
        const deadline = Date.now() + timeoutMs
        let last = await retry(() => owners(ids), {
          timeoutMs,
          everyMs: 500,
          what: `${ids.length} links to forward`,
        })
        let steady = 1
        while (steady < STEADY_CHECKS && Date.now() < deadline) {
          await sleep(1_000)
          const now = await owners(ids).catch(() => undefined)
          steady = now && ids.every((id) => now.get(id) === last.get(id)) ? steady + 1 : 0
          if (now) last = now
        }
        const spread: Record<string, number> = {}
        for (const s of supervisors) spread[s.label] = 0
        for (const label of last.values()) spread[label]!++
        return { spread, settled: steady >= STEADY_CHECKS }
      },
      async allStopped(ids, timeoutMs) {
        await retry(
          async () => {
            for (const id of ids) {
              const entry = await links.get(id)
              const link = entry?.operation === 'PUT' ? decodeJson<LinkStatus>(entry.value) : null
              if (link?.state === 'Forwarding') throw new Error(`${id} forwards`)
            }
          },
          { timeoutMs, everyMs: 500, what: 'every link to stop' }
        )
      },
      close,
    }
  } catch (err) {
    await close()
    throw err
  }
}
