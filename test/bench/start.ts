/**
 * Start-up of the embedded default: the time from spawning the command `npm start` runs (read
 * from package.json) to `/readyz` answering 200 and the MQTT port answering a CONNECT with a
 * CONNACK, on an empty data folder (first start) and again on the same folder (restart), beside
 * Mosquitto started the same way in the same run. Also, per round: a restart run from source
 * through tsx (how the tests and the image start it), and one through `npm start` itself (npm's
 * own start-up on top). The CPU time the process used up to ready is printed too: on a shared
 * machine it moves less than the wall time. Ends with one JSON line of medians.
 *
 * BENCH_ROUNDS (default 5) rounds; one start before them is not counted (it makes the bundle and
 * the PGlite template when they are missing, as the first start after a clone without
 * `npm install` would).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpuSeconds } from './proc.ts'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { freePort } from '../../deploy/free-port.ts'
import { median } from './bridge-measure.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const MOSQUITTO = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto'
const DEADLINE_MS = 120_000
/** Settings a start must not inherit from the shell (CI sets NATS_URL and DATABASE_URL). */
const INHERITED = /^(UB_.*|NATS_URL|DATABASE_URL)$/

interface Start {
  /** Spawn to `/readyz` 200 (ours) or to the CONNACK (Mosquitto). */
  readyMs: number
  /** Spawn to the MQTT port's CONNACK. */
  mqttMs: number
  /** CPU time of the process up to ready (user + system, its threads included); null for npm. */
  cpuMs: number | null
}

/** `npm start`'s command, as argv: `exec node …` → [node, …]. */
function npmStartArgv(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
    scripts: { start: string }
  }
  const argv = pkg.scripts.start.replace(/^exec\s+/, '').split(/\s+/)
  if (argv[0] !== 'node') throw new Error(`npm start does not run node: ${pkg.scripts.start}`)
  return [process.execPath, ...argv.slice(1)]
}

const FROM_SOURCE = [process.execPath, '--import', 'tsx', 'services/launch/cli.ts', 'start']
const THROUGH_NPM = ['npm', 'start']

/** A CONNECT (MQTT 3.1.1, clean session, client id "b") answered by a CONNACK; false on anything else. */
function connack(port: number): Promise<boolean> {
  const connect = Buffer.from([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 10, 0, 1, 0x62])
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1')
    const done = (ok: boolean) => (s.destroy(), resolve(ok))
    s.setTimeout(2_000, () => done(false))
    s.once('connect', () => s.write(connect))
    s.once('data', (d: Buffer) => done(d[0] === 0x20))
    s.once('error', () => done(false))
  })
}

async function readyz(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, {
      signal: AbortSignal.timeout(2_000),
    })
    await res.arrayBuffer()
    return res.status === 200
  } catch {
    return false
  }
}

/** Polls `check` every 10 ms until true; the time since `t0`. */
async function until(check: () => Promise<boolean>, t0: number, child: ChildProcess) {
  while (!(await check())) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode} before ready`)
    if (performance.now() - t0 > DEADLINE_MS) throw new Error('not ready within the deadline')
    await new Promise((r) => setTimeout(r, 10))
  }
  return performance.now() - t0
}

/** Its own process group, so a stop reaches npm's child too. */
function launch(argv: string[], env: NodeJS.ProcessEnv): ChildProcess {
  let stderr = ''
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: ROOT,
    env,
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)))
  child.once('exit', (code) => {
    if (code !== 0 && code !== null && !child.killed) console.error(stderr)
  })
  return child
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  process.kill(-child.pid!, 'SIGTERM')
  const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 20_000)
  await exited
  clearTimeout(timer)
}

/** One start of ours on `dataDir`: spawn to ready, then stopped. */
async function startOurs(argv: string[], dataDir: string): Promise<Start> {
  const [httpPort, mqttPort] = [await freePort(), await freePort()]
  const env: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !INHERITED.test(k))
  )
  Object.assign(env, {
    UB_DATA_DIR: dataDir,
    UB_HTTP_PORT: String(httpPort),
    UB_MQTT_PORT: String(mqttPort),
    UB_HTTP_HOST: '127.0.0.1',
    UB_MQTT_HOST: '127.0.0.1',
    UB_LOG_LEVEL: 'warn',
  })
  const t0 = performance.now()
  const child = launch(argv, env)
  try {
    const [readyMs, mqttMs] = await Promise.all([
      until(() => readyz(httpPort), t0, child),
      until(() => connack(mqttPort), t0, child),
    ])
    const cpuMs = argv === THROUGH_NPM ? null : 1_000 * cpuSeconds(child.pid!)
    return { readyMs, mqttMs, cpuMs }
  } finally {
    await stop(child)
  }
}

async function startMosquitto(dir: string): Promise<Start> {
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  await writeFile(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\n`)
  const t0 = performance.now()
  const child = launch([MOSQUITTO, '-c', conf], process.env)
  try {
    const readyMs = await until(() => connack(port), t0, child)
    return { readyMs, mqttMs: readyMs, cpuMs: 1_000 * cpuSeconds(child.pid!) }
  } finally {
    await stop(child)
  }
}

type Kind = 'first' | 'restart' | 'sourceRestart' | 'npmRestart' | 'mosquitto'

/** One round: each kind once, in a fresh temp folder removed after. */
async function round(ours: string[]): Promise<Record<Kind, Start>> {
  const dir = await mkdtemp(join(tmpdir(), 'ub-bench-start-'))
  try {
    const data = join(dir, 'data')
    const first = await startOurs(ours, data)
    const restart = await startOurs(ours, data)
    const sourceRestart = await startOurs(FROM_SOURCE, data)
    const npmRestart = await startOurs(THROUGH_NPM, data)
    const mosquitto = await startMosquitto(dir)
    return { first, restart, sourceRestart, npmRestart, mosquitto }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const ms = (n: number) => Math.round(n)
const medianOf = (rounds: Array<Record<Kind, Start>>, kind: Kind) => ({
  readyMs: ms(median(rounds.map((r) => r[kind].readyMs))),
  mqttMs: ms(median(rounds.map((r) => r[kind].mqttMs))),
  cpuMs: rounds[0]![kind].cpuMs === null ? null : ms(median(rounds.map((r) => r[kind].cpuMs!))),
})

export async function runStartBench(): Promise<object> {
  const ours = npmStartArgv()
  const warm = await mkdtemp(join(tmpdir(), 'ub-bench-start-'))
  const warmup = await startOurs(ours, join(warm, 'data')).finally(() =>
    rm(warm, { recursive: true, force: true })
  )
  const rounds: Array<Record<Kind, Start>> = []
  for (let i = 0; i < ROUNDS; i++) rounds.push(await round(ours))
  const m = Object.fromEntries(
    (['first', 'restart', 'sourceRestart', 'npmRestart', 'mosquitto'] as const).map((k) => [
      k,
      medianOf(rounds, k),
    ])
  ) as Record<Kind, ReturnType<typeof medianOf>>
  const anchor = m.mosquitto.readyMs
  const line = (label: string, s: ReturnType<typeof medianOf>) =>
    `${label.padEnd(34)} ${String(s.readyMs).padStart(6)} ms  mqtt ${String(s.mqttMs).padStart(6)} ms` +
    `  cpu ${s.cpuMs === null ? '     —' : String(s.cpuMs).padStart(6)} ms  ×${(s.readyMs / anchor).toFixed(0)} Mosquitto`
  console.log(
    [
      `start-up, medians of ${ROUNDS} rounds (spawn to /readyz 200; mqtt: to a CONNACK)`,
      `command: ${ours.slice(1).join(' ')} (npm start's)`,
      line('first start (empty data folder)', m.first),
      line('restart (same folder)', m.restart),
      line('restart from source (tsx)', m.sourceRestart),
      line('restart through npm start', m.npmRestart),
      line('anchor: mosquitto -c (same run)', m.mosquitto),
      `uncounted start before the rounds (makes missing caches): ${ms(warmup.readyMs)} ms`,
      'targets: restart < 3,000 ms, first start < 5,000 ms',
    ].join('\n')
  )
  const summary = {
    bench: 'start',
    rounds: ROUNDS,
    ours: {
      firstMs: m.first.readyMs,
      restartMs: m.restart.readyMs,
      firstMqttMs: m.first.mqttMs,
      restartMqttMs: m.restart.mqttMs,
      firstCpuMs: m.first.cpuMs,
      restartCpuMs: m.restart.cpuMs,
      sourceRestartMs: m.sourceRestart.readyMs,
      sourceRestartCpuMs: m.sourceRestart.cpuMs,
      npmRestartMs: m.npmRestart.readyMs,
      warmupMs: ms(warmup.readyMs),
    },
    mosquitto: { startMs: anchor, cpuMs: m.mosquitto.cpuMs },
    ratioFirstToMosquitto: Math.round(m.first.readyMs / anchor),
    ratioRestartToMosquitto: Math.round(m.restart.readyMs / anchor),
  }
  console.log(JSON.stringify(summary))
  return summary
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runStartBench()
  process.exit(0)
}
