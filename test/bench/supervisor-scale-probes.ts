/**
 * What `npm run bench -- supervisor` reads off the processes it measures: CPU over a window
 * (proc.ts), the V8 heap from an instance's /metrics after a full collection (asked for over the
 * inspector the instance runs with), how many clients a Mosquitto has connected, and when a probe
 * through every link reached the cloud.
 */
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { retry, sleep } from '../chaos/wait.ts'
import type { Instance } from '../helpers/instance.ts'
import { cpuSeconds } from './proc.ts'
import { connect } from './scale-load.ts'

const CPU_WINDOW_MS = 10_000
/** For the child's environment: an inspector on a free port, announced on its stderr. */
export const INSPECTOR_ENV = { NODE_OPTIONS: '--inspect=127.0.0.1:0' }

/** CPU of `pid` over `ms`, percent of one core. */
export async function cpuPercent(pid: number, ms = CPU_WINDOW_MS): Promise<number> {
  const [c0, t0] = [cpuSeconds(pid), performance.now()]
  await sleep(ms)
  return Math.round((1_000 * (cpuSeconds(pid) - c0)) / ((performance.now() - t0) / 1_000)) / 10
}

/** A full garbage collection in the instance, over its inspector (Chrome DevTools Protocol). */
export async function collectGarbage(inst: Instance): Promise<void> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(inst.output())?.[1]
  if (!url) throw new Error('the instance runs without an inspector (INSPECTOR_ENV)')
  const ws = new WebSocket(url)
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  try {
    await new Promise<void>((resolve, reject) => {
      ws.on('message', (data) => {
        const answer = JSON.parse(data.toString()) as { id?: number; error?: unknown }
        if (answer.id !== 1) return
        if (answer.error) reject(new Error(JSON.stringify(answer.error)))
        else resolve()
      })
      ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }))
    })
  } finally {
    ws.close()
  }
}

export async function heapBytes(inst: Instance): Promise<number> {
  const res = await inst.fetch(`${inst.httpUrl}/metrics`, {
    headers: { authorization: `Bearer ${inst.adminToken}` },
  })
  const m = /^nodejs_heap_size_used_bytes (\S+)$/m.exec(await res.text())
  if (!m) throw new Error(`no heap figure on /metrics (${res.status})`)
  return Number(m[1])
}

/** The last value the cloud published on `$SYS/broker/clients/connected` (every second). */
export async function connectedOn(url: string) {
  const client = await connect(url)
  let connected = 0
  client.on('message', (_t, payload) => (connected = Number(payload.toString())))
  await client.subscribeAsync('$SYS/broker/clients/connected')
  return { now: () => connected, close: () => client.endAsync(true) }
}

/** A subscriber on the cloud: when (epoch ms) the probes of all `count` namespaces had arrived. */
export async function probeWatch(cloudUrl: string, tag: string, count: number, timeoutMs: number) {
  const client = await connect(cloudUrl)
  const seen = new Set<string>()
  let lastAt = 0
  client.on('message', (topic) => {
    if (!topic.endsWith(`/${tag}`) || seen.has(topic)) return
    seen.add(topic)
    lastAt = Date.now()
  })
  await client.subscribeAsync(`acme/+/${tag}`, { qos: 1 })
  return {
    all: () =>
      retry(
        async () => {
          if (seen.size < count) throw new Error(`${seen.size} of ${count} probes through`)
          return lastAt
        },
        { timeoutMs, everyMs: 250, what: `${count} probes` }
      ),
    close: () => client.endAsync(true),
  }
}

type LogLine = Record<string, unknown>

/** The instance's log lines that `match`. */
function logLines(inst: Instance, match: (line: LogLine) => boolean): LogLine[] {
  const out: LogLine[] = []
  for (const text of inst.output().split('\n')) {
    if (!text.startsWith('{')) continue
    try {
      const line = JSON.parse(text) as LogLine
      if (match(line)) out.push(line)
    } catch {
      // a partial line
    }
  }
  return out
}

/** The time (epoch ms) of the instance's first log line that `match`es. */
export function logTime(inst: Instance, match: (line: LogLine) => boolean): number {
  const [first] = logLines(inst, match)
  if (!first) throw new Error("no such line in the instance's log")
  return Number(first.time)
}

/** How many of the instance's log lines `match`. */
export const logCount = (inst: Instance, match: (line: LogLine) => boolean): number =>
  logLines(inst, match).length
