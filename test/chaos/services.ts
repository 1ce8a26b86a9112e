import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { launchProcess, type LaunchedProcess } from '../../deploy/launch.ts'
import type { ServiceName } from '../../services/common/config.ts'
import { createServer } from 'node:net'
import type { Netns } from './netns.ts'
import { retry } from './wait.ts'

/**
 * One service replica in its own process, on fixed ports and a fixed data folder, so a replica
 * killed (SIGKILL) or stopped (SIGTERM) starts again as the same member: its gateway port stays
 * in the publishers' and supervisors' lists.
 */
export interface ServiceProcess {
  service: ServiceName
  index: number
  /** `gateway#0` */
  label: string
  httpUrl: string
  /** Gateways only. */
  mqttUrl: string | null
  readonly pid: number | undefined
  readonly running: boolean
  start(): Promise<void>
  /** SIGKILL: a crash, no cleanup. */
  kill(): Promise<void>
  /** SIGTERM: a graceful stop. */
  stop(): Promise<void>
  /** Its data folder, kept across restarts; the harness removes it at the end. */
  dataDir: string
  /** Everything every run of it wrote, oldest first. */
  output(): string
}

export interface ServiceSettings {
  env: Record<string, string>
  /** Flags every process gets. */
  args: string[]
}

export async function defineService(
  service: ServiceName,
  index: number,
  settings: ServiceSettings,
  ownArgs: (ports: { http: number; mqtt: number }) => string[] = () => [],
  /** Run it inside this namespace, listening on its control link (which no partition cuts). */
  netns?: Netns
): Promise<ServiceProcess> {
  const ports = { http: await stablePort(), mqtt: await stablePort() }
  const dir = await mkdtemp(join(tmpdir(), `ub-chaos-${service}-`))
  const earlier: string[] = []
  let proc: LaunchedProcess | undefined
  const host = netns?.controlNsAddress ?? '127.0.0.1'
  const args = [
    ...['--services', service, '--data-dir', dir, '--http-host', host],
    ...['--http-port', String(ports.http), '--mqtt-host', host, '--mqtt-port', String(ports.mqtt)],
    ...settings.args,
    ...ownArgs(ports),
    // Its clients come from the control link's host side, not loopback: let them in anyway.
    ...(netns ? ['--anonymous', 'always'] : []),
  ]
  const retire = () => {
    if (proc) earlier.push(proc.output())
    proc = undefined
  }
  return {
    service,
    index,
    label: `${service}#${index}`,
    httpUrl: `http://${host}:${ports.http}`,
    mqttUrl: service === 'gateway' ? `mqtt://${host}:${ports.mqtt}` : null,
    get pid() {
      return proc?.child.pid
    },
    get running() {
      return proc !== undefined
    },
    async start() {
      if (proc) return
      // A port the killed process held may linger a moment; the launcher refuses a taken one.
      proc = await retry(
        () => launchProcess({ args, env: settings.env, wrap: netns?.wrap ?? [] }),
        {
          timeoutMs: 120_000,
          everyMs: 1_000,
          what: `${service}#${index} to start`,
        }
      )
    },
    async kill() {
      await proc?.kill()
      retire()
    },
    async stop() {
      await proc?.stop()
      retire()
    },
    dataDir: dir,
    output: () => [...earlier, proc?.output() ?? ''].join('\n--- restarted ---\n'),
  }
}

/**
 * A free port outside the kernel's ephemeral range. A replica keeps its ports across restarts,
 * and a port taken from the ephemeral range (port 0) may meanwhile be the local end of some
 * client's connection, which holds it for as long as it lasts: a restart, or the first start, then
 * finds it "in use" for minutes (seen in a suite run: a supervisor refused for 120 s).
 */
async function stablePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000) // below 32768, Linux's default floor
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer()
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
}
