import { spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { connect as netConnect } from 'node:net'

const DEFAULT_START_TIMEOUT_MS = 10_000 // 10 s

export { freePort } from '../../deploy/free-port.ts'

function accepts(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, host)
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })
}

export interface ServerProcess {
  /** Its process id (benchmarks read its CPU time from /proc). */
  pid: number
  /** SIGTERM by default; SIGKILL models a crash. Resolves once it exited and `dir` is gone. */
  stop(signal?: NodeJS.Signals): Promise<void>
}

/**
 * Spawn a server binary (mosquitto, nats-server) that owns the temp folder `dir`, and resolve
 * once it accepts TCP on `port`; a server that exits or stays silent fails with its stderr.
 */
export async function spawnServer({
  bin,
  args,
  port,
  dir,
  startTimeoutMs = DEFAULT_START_TIMEOUT_MS,
  host = '127.0.0.1',
}: {
  bin: string
  args: string[]
  port: number
  dir: string
  startTimeoutMs?: number
  /** Where it listens: where readiness is checked. */
  host?: string
}): Promise<ServerProcess> {
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + startTimeoutMs
  while (!(await accepts(port, host))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      await rm(dir, { recursive: true, force: true })
      throw new Error(`${bin} ${args.join(' ')} did not start:\n${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 30))
  }
  let stopping: Promise<void> | undefined
  return {
    pid: child.pid!,
    stop: (signal = 'SIGTERM') =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal)
        await exited
        await rm(dir, { recursive: true, force: true })
      })()),
  }
}
