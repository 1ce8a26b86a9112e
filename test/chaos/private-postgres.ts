import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { freePort } from '../helpers/mosquitto.ts'

/** Where Debian puts each installed major version's binaries; PG_BIN overrides. */
const DEBIAN_PG_ROOT = '/usr/lib/postgresql'
const PG_USER = 'postgres'

/**
 * A Postgres of the chaos fabric's own, on a free port with its data in a temp folder and trust
 * auth: the machine's shared Postgres (5432) serves other tests, so it must never be restarted.
 * Run as root, every command runs as the `postgres` OS user (initdb and postgres refuse root).
 */
export interface PrivatePostgres {
  port: number
  /** `postgres://postgres@127.0.0.1:<port>/<database>` */
  url(database?: string): string
  createDatabase(name: string): Promise<string>
  /** `pg_ctl stop -m fast`: every connection ends, as at a restart. */
  stop(): Promise<void>
  start(): Promise<void>
  /** `pg_terminate_backend` on every connection to `database` (not this one); how many went. */
  terminateBackends(database: string): Promise<number>
  /** The server's log so far. */
  log(): string
  close(): Promise<void>
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = process.env.PG_BIN ?? (await newestDebianBin())
  const port = await freePort()
  const dir = await mkdtemp(join(tmpdir(), 'ub-chaos-pg-'))
  const dataDir = join(dir, 'data')
  const logPath = join(dir, 'postgres.log')
  const asRoot = process.getuid?.() === 0
  const run = (tool: string, args: string[]) =>
    exec(
      asRoot ? 'runuser' : join(bin, tool),
      asRoot ? ['-u', PG_USER, '--', join(bin, tool), ...args] : args
    )
  // fsync off: the server is stopped and killed, the machine is not, so nothing is lost by it.
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`
  const pgCtl = (...args: string[]) => run('pg_ctl', ['-D', dataDir, '-w', '-t', '60', ...args])
  const url = (database = 'postgres') => `postgres://${PG_USER}@127.0.0.1:${port}/${database}`
  // A client per command: a long-lived one would outlive the server's restarts.
  const asAdmin = async <T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> => {
    const sql = postgres(url(), { max: 1, onnotice: () => {} })
    try {
      return await fn(sql)
    } finally {
      await sql.end({ timeout: 1 })
    }
  }
  const close = async () => {
    await pgCtl('-m', 'immediate', 'stop').catch(() => {})
    await rm(dir, { recursive: true, force: true })
  }
  try {
    if (asRoot) await exec('chown', [`${PG_USER}:`, dir])
    await run('initdb', ['-D', dataDir, '-U', PG_USER, '--auth=trust', '-E', 'UTF8', '--no-sync'])
    await pgCtl('-l', logPath, '-o', serverOptions, 'start')
  } catch (err) {
    await close()
    throw err
  }
  return {
    port,
    url,
    async createDatabase(name) {
      await asAdmin((sql) => sql.unsafe(`create database "${name}"`))
      return url(name)
    },
    stop: () => pgCtl('-m', 'fast', 'stop'),
    start: () => pgCtl('-l', logPath, '-o', serverOptions, 'start'),
    async terminateBackends(database) {
      const [row] = await asAdmin(
        (sql) => sql`
          select count(*)::int as n from (
            select pg_terminate_backend(pid) from pg_stat_activity
            where datname = ${database} and pid <> pg_backend_pid()) t`
      )
      return row!.n as number
    },
    log: () => {
      try {
        return readFileSync(logPath, 'utf8')
      } catch {
        return ''
      }
    },
    close,
  }
}

async function newestDebianBin(): Promise<string> {
  const versions = (await readdir(DEBIAN_PG_ROOT).catch(() => [])).filter((v) => /^\d+$/.test(v))
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0]
  if (!newest) throw new Error(`no Postgres under ${DEBIAN_PG_ROOT}; set PG_BIN to its bin folder`)
  return join(DEBIAN_PG_ROOT, newest, 'bin')
}

/** Run a command to its end; a non-zero exit fails with its output. */
function exec(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // stdin ignored, output piped: pg_ctl's server inherits none of our pipes (-l takes its log).
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    const keep = (d: Buffer) => (out = (out + d.toString()).slice(-4_000))
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    child.once('error', reject)
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out}`))
    )
  })
}
