import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TEST_POSTGRES_URL } from '../helpers/db.ts'
import { natsUrl, uniquePrefix } from '../helpers/nats.ts'
import { freePort } from '../helpers/server-process.ts'
import { expectOneLineNaming, runCli } from './cli-run.ts'

const PASSWORD = 'pw-must-not-show'
const dirs: string[] = []
const dataDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'ub-bad-'))
  dirs.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

/** The test server's URL with another user, password, port or database. */
function postgresUrl(change: { user?: string; port?: number; database?: string }): string {
  const u = new URL(TEST_POSTGRES_URL)
  if (change.user) u.username = change.user
  u.password = PASSWORD
  if (change.port) u.port = String(change.port)
  if (change.database) u.pathname = `/${change.database}`
  return u.toString()
}

/** A binding store alone on the shared NATS, as the distributed recipe starts it. */
const startStore = (env: Record<string, string>) =>
  runCli(['start', '--services', 'store', '--data-dir', dataDir(), '--http-port', '0'], {
    env: {
      NATS_URL: natsUrl(),
      UB_BUS_PREFIX: uniquePrefix('badset'),
      UB_ADMIN_TOKEN: 'ubt_bad_settings_' + randomBytes(8).toString('hex'),
      UB_SECRET_KEY: randomBytes(32).toString('base64'),
      ...env,
    },
  })

describe('a wrong Postgres setting is one line naming databaseUrl, password redacted', () => {
  it('a database that does not exist (start does not create it; migrate does)', async () => {
    const missing = `ub_t_missing_${randomBytes(4).toString('hex')}`
    const run = await startStore({ DATABASE_URL: postgresUrl({ database: missing }) })
    const line = expectOneLineNaming(run, 'databaseUrl')
    expect(line).toContain(`database "${missing}" does not exist`)
    expect(line).toContain('uns-bridge migrate')
    expect(line).toContain('DATABASE_URL')
    expect(run.stderr + run.stdout).not.toContain(PASSWORD)
  })

  it('a host where nothing listens', async () => {
    const run = await startStore({ DATABASE_URL: postgresUrl({ port: await freePort() }) })
    const line = expectOneLineNaming(run, 'databaseUrl')
    expect(line).toMatch(/cannot connect to Postgres at postgres:\/\/[^ ]*:\*\*\*@127\.0\.0\.1:\d+/)
    expect(line).toContain('connection refused')
    expect(run.stderr + run.stdout).not.toContain(PASSWORD)
  })

  it('a user the server refuses', async () => {
    const run = await startStore({ DATABASE_URL: postgresUrl({ user: 'ub_no_such_role' }) })
    const line = expectOneLineNaming(run, 'databaseUrl')
    expect(line).toMatch(/authentication failed: .*ub_no_such_role/)
    expect(run.stderr + run.stdout).not.toContain(PASSWORD)
  })

  it('migrate names it too when the server cannot be reached', async () => {
    const run = await runCli(['migrate'], {
      env: { DATABASE_URL: postgresUrl({ port: await freePort() }) },
    })
    expect(expectOneLineNaming(run, 'databaseUrl')).toContain('connection refused')
    expect(run.stderr + run.stdout).not.toContain(PASSWORD)
  })
})

describe('a wrong NATS setting is one line naming natsUrl', () => {
  it('a server address where nothing listens', async () => {
    const port = await freePort()
    const run = await runCli(
      ['start', '--services', 'gateway', '--data-dir', dataDir(), '--http-port', '0'],
      {
        env: {
          NATS_URL: `nats://ub:${PASSWORD}@127.0.0.1:${port}`,
          UB_ADMIN_TOKEN: 'ubt_bad_settings_' + randomBytes(8).toString('hex'),
        },
      }
    )
    const line = expectOneLineNaming(run, 'natsUrl')
    expect(line).toContain(`nats://ub:***@127.0.0.1:${port}`)
    expect(line).toContain('connection refused')
    expect(run.stderr + run.stdout).not.toContain(PASSWORD)
  })
})

describe('settings checked before any service starts', () => {
  it('--http-tls without a certificate names tlsCert and starts nothing', async () => {
    const run = await runCli(['start', '--http-tls', '--data-dir', dataDir(), '--http-port', '0'])
    expect(expectOneLineNaming(run, 'tlsCert')).toContain('httpTls')
    expect(run.stdout).not.toMatch(
      /"msg":"(binding store serving|gateway listening|supervisor started)"/
    )
  })

  describe('an explicit port that is taken fails at once, naming the setting and the port', () => {
    let blocker: Server
    let port: number
    afterAll(() => new Promise<void>((done) => (blocker ? blocker.close(() => done()) : done())))

    beforeAll(async () => {
      blocker = createServer()
      await new Promise<void>((done) => blocker.listen(0, '127.0.0.1', done))
      port = (blocker.address() as { port: number }).port
    }, 30_000)

    it('httpPort on the embedded default (which would start PGlite first)', async () => {
      const dir = dataDir()
      const run = await runCli([
        ...['start', '--data-dir', dir, '--http-host', '127.0.0.1'],
        ...['--http-port', String(port), '--mqtt-port', '0'],
      ])
      const line = expectOneLineNaming(run, 'httpPort')
      expect(line).toContain(`port ${port}`)
      expect(line).toContain('in use')
      // Refused before anything started: PGlite never made its cluster (a timed bound here once
      // failed on a loaded machine; what did not happen is the evidence).
      expect(existsSync(join(dir, 'pg'))).toBe(false)
      // No token was printed, so none is kept: the next start makes one and prints it.
      expect(existsSync(join(dir, 'admin-token'))).toBe(false)
    })

    it('mqttPort on a gateway process (which would wait for the store first)', async () => {
      const run = await runCli(
        [
          ...['start', '--services', 'gateway', '--data-dir', dataDir()],
          ...['--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', String(port)],
        ],
        {
          env: {
            NATS_URL: natsUrl(),
            UB_BUS_PREFIX: uniquePrefix('busyport'),
            UB_ADMIN_TOKEN: 'ubt_bad_settings_' + randomBytes(8).toString('hex'),
          },
        }
      )
      const line = expectOneLineNaming(run, 'mqttPort')
      expect(line).toContain(`port ${port}`)
      // Refused before waiting for the binding store (none runs under this prefix: waiting would
      // log it, and last until the test's timeout).
      expect(run.stdout + run.stderr).not.toContain('waiting for the binding store')
    })
  })
})
