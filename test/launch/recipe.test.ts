import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { afterAll, describe, expect, it } from 'vitest'
import { launchProcess, type LaunchedProcess } from '../../deploy/launch.ts'
import { TEST_POSTGRES_URL } from '../helpers/db.ts'
import { destroyBucketsWithPrefix, natsUrl, uniquePrefix } from '../helpers/nats.ts'
import { expectOneLineNaming, runCli } from './cli-run.ts'

const withDatabase = (url: string, database: string) => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

async function onServer<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(TEST_POSTGRES_URL, { max: 1, onnotice: () => {} })
  try {
    return await fn(sql)
  } finally {
    await sql.end({ timeout: 5 })
  }
}

const dropDatabase = (name: string) =>
  onServer((sql) => sql.unsafe(`drop database if exists "${name}" with (force)`))

/**
 * The README's distributed recipe, as a new user runs it: `migrate` makes the database, then
 * each service is its own process on one NATS and one Postgres, every one given the same
 * UB_ADMIN_TOKEN, and that token (no other) opens every process's operator routes.
 */
describe('the distributed recipe (migrate, then one process per service)', () => {
  // Mixed case and a hyphen: created unquoted, the name would fail or be folded to lower case.
  const database = `ub_t_${randomBytes(5).toString('hex')}-Recipe`
  const databaseUrl = withDatabase(TEST_POSTGRES_URL, database)
  const prefix = uniquePrefix('recipe')
  const token = 'ubt_recipe_' + randomBytes(12).toString('hex')
  const env = {
    NATS_URL: natsUrl(),
    DATABASE_URL: databaseUrl,
    UB_BUS_PREFIX: prefix,
    UB_ADMIN_TOKEN: token,
    UB_SECRET_KEY: randomBytes(32).toString('base64'),
  }
  const dirs: string[] = []
  const procs: Partial<Record<'store' | 'gateway' | 'handshake', LaunchedProcess>> = {}

  afterAll(async () => {
    await Promise.all(Object.values(procs).map((p) => p.stop()))
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
    await dropDatabase(database)
    await destroyBucketsWithPrefix(prefix)
  }, 60_000)

  const start = (service: 'store' | 'gateway' | 'handshake') => {
    const dir = mkdtempSync(join(tmpdir(), `ub-recipe-${service}-`))
    dirs.push(dir)
    return launchProcess({
      args: [
        ...['--services', service, '--data-dir', dir],
        ...['--http-host', '127.0.0.1', '--http-port', '0'],
        ...['--mqtt-host', '127.0.0.1', '--mqtt-port', '0'],
      ],
      env, // deploy/launch.ts adds it to this environment: every fabric setting is set here
    })
  }
  const httpOf = (service: keyof typeof procs) => procs[service]!.ready.http as string
  const get = async (url: string, bearer?: string) => {
    const res = await fetch(url, bearer ? { headers: { authorization: `Bearer ${bearer}` } } : {})
    const text = await res.text()
    return { status: res.status, type: res.headers.get('content-type') ?? '', text }
  }

  it('migrate creates the missing database, then migrates it; a second migrate changes nothing', async () => {
    const exists = () =>
      onServer(
        async (sql) => (await sql`select 1 from pg_database where datname = ${database}`).length
      )
    expect(await exists()).toBe(0)
    const first = await runCli(['migrate'], { env, timeoutMs: 60_000 })
    expect(first.code, first.stderr + first.stdout).toBe(0)
    expect(await exists()).toBe(1)
    const tables = await onServer(async (sql) => {
      const inDb = postgres(databaseUrl, { max: 1, onnotice: () => {} })
      try {
        return (
          await inDb`select table_name from information_schema.tables where table_schema = 'public'`
        ).map((r) => r.table_name as string)
      } finally {
        await inDb.end({ timeout: 5 })
      }
    })
    expect(tables).toContain('instance')
    const again = await runCli(['migrate'], { env, timeoutMs: 60_000 })
    expect(again.code, again.stderr + again.stdout).toBe(0)
    expect(again.stdout).not.toContain('created the database')
  }, 120_000)

  it('starts the store, a gateway and the handshake API, each naming the one token story', async () => {
    procs.store = await start('store')
    ;[procs.gateway, procs.handshake] = await Promise.all([start('gateway'), start('handshake')])
    for (const [service, proc] of Object.entries(procs)) {
      const banner = proc.output()
      expect(banner, service).toContain('admin token: (the adminToken you set')
      expect(banner, service).not.toContain('not needed')
      expect(banner, service).not.toContain(token) // a configured token is never echoed
      expect(proc.ready.instanceId, service).toBe(procs.store!.ready.instanceId)
    }
  }, 180_000)

  it('the API accepts exactly that token and refuses another with 401 JSON', async () => {
    const api = httpOf('handshake')
    const ok = await get(`${api}/api/v1/instance`, token)
    expect(ok.status, ok.text).toBe(200)
    expect(JSON.parse(ok.text)).toMatchObject({ instanceId: procs.store!.ready.instanceId })
    for (const bearer of [token + 'x', 'ubt_' + randomBytes(12).toString('hex'), undefined]) {
      const refused = await get(`${api}/api/v1/upstreams`, bearer)
      expect(refused.status).toBe(401)
      expect(refused.type).toMatch(/^application\/json/)
      expect(JSON.parse(refused.text)).toMatchObject({ error: { code: 'unauthorized' } })
    }
    // A write goes through the store process into Postgres and back.
    const created = await fetch(`${api}/api/v1/upstreams`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'mqtt', host: 'mqtt://127.0.0.1', brokerPort: 1883 }),
    })
    expect(created.status).toBe(201)
    const { id } = (await created.json()) as { id: string }
    expect((await get(`${api}/api/v1/upstreams/${id}`, token)).status).toBe(200)
  })

  it('every process checks that token itself: /metrics opens with it, also with the store gone', async () => {
    const check = async () => {
      for (const service of Object.keys(procs) as Array<keyof typeof procs>) {
        const metrics = `${httpOf(service)}/metrics`
        expect((await get(metrics, token)).status, service).toBe(200)
        const wrong = await get(metrics, token + 'x')
        expect(wrong.status, service).toBe(401)
        expect(JSON.parse(wrong.text), service).toMatchObject({ error: { code: 'unauthorized' } })
      }
    }
    await check()
    expect(await procs.store!.stop()).toBe(0)
    delete procs.store
    await check() // no process asks the store whether a token is right
  }, 60_000)
})

describe('a process on NATS without adminToken', () => {
  it.each(['store', 'gateway', 'handshake'])(
    'refuses to start (%s): one line naming adminToken, before it dials anything',
    async (service) => {
      const dir = mkdtempSync(join(tmpdir(), 'ub-notoken-'))
      try {
        const run = await runCli(
          [
            'start',
            '--services',
            service,
            '--data-dir',
            dir,
            '--http-port',
            '0',
            '--mqtt-port',
            '0',
          ],
          {
            env: {
              NATS_URL: natsUrl(),
              UB_BUS_PREFIX: uniquePrefix('notoken'),
              DATABASE_URL: withDatabase(TEST_POSTGRES_URL, 'ub_t_never_made'),
              UB_SECRET_KEY: randomBytes(32).toString('base64'),
            },
          }
        )
        const line = expectOneLineNaming(run, 'adminToken')
        expect(line).toContain('UB_ADMIN_TOKEN')
        expect(line).toContain('every process')
        expect(run.stdout).not.toMatch(/"msg":"(binding store serving|gateway listening)"/)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },
    40_000
  )
})
