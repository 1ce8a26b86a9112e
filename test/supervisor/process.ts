import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { LinkCounters } from '../../services/supervisor/index.ts'

const FIXTURE = fileURLToPath(new URL('./fixtures/supervisor-process.ts', import.meta.url))
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface SupervisorProcess {
  child: ChildProcess
  supervisorId: string
  ready: Promise<void>
  /** The links it reported last (every 250 ms). */
  links(): Record<string, LinkCounters>
  kill(signal?: NodeJS.Signals): Promise<void>
}

export function spawnSupervisor(env: {
  natsUrl: string
  prefix: string
  localUrl: string
  supervisorId: string
  leaseTtlMs?: number
  window?: number
}): SupervisorProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      NATS_URL: env.natsUrl,
      BUS_PREFIX: env.prefix,
      LOCAL_URL: env.localUrl,
      SUPERVISOR_ID: env.supervisorId,
      LEASE_TTL_MS: String(env.leaseTtlMs ?? 2_000),
      BRIDGE_WINDOW: String(env.window ?? 64),
    },
  })
  let links: Record<string, LinkCounters> = {}
  let stderr = ''
  let buf = ''
  const exited = new Promise<void>((res) => child.once('exit', () => res()))
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl: number
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        if (line.startsWith('ready ')) resolve()
        else if (line.startsWith('links ')) links = JSON.parse(line.slice(6))
      }
    })
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)))
    void exited.then(() => reject(new Error(`supervisor exited before ready:\n${stderr}`)))
  })
  ready.catch(() => {}) // a test that kills it early does not await ready
  return {
    child,
    supervisorId: env.supervisorId,
    ready,
    links: () => links,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      await exited
    },
  }
}
