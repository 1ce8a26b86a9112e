import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

const ROOT = new URL('..', import.meta.url).pathname
const DEFAULT_START_TIMEOUT_MS = 60_000 // a bundle to make + PGlite init on a loaded 2-core box

export interface LaunchedProcess {
  /** The fields of the process's `ready` log line: instanceId, http, mqtt, services, endpoints. */
  ready: Record<string, unknown>
  child: ChildProcess
  output(): string
  /** SIGTERM, then wait; resolves to the exit code. */
  stop(): Promise<number | null>
  /** SIGKILL: no cleanup runs, like a crash. */
  kill(): Promise<void>
}

/** Start `uns-bridge start <args>` as its own process and wait for its `ready` log line. */
export async function launchProcess({
  args,
  env = {},
  startTimeoutMs = DEFAULT_START_TIMEOUT_MS,
  wrap = [],
}: {
  args: string[]
  env?: Record<string, string>
  startTimeoutMs?: number
  /** A command it runs under, e.g. `ip netns exec <ns>` (which execs it: the pid stays its own). */
  wrap?: string[]
}): Promise<LaunchedProcess> {
  const [bin, ...wrapArgs] = [...wrap, process.execPath]
  const child = spawn(
    bin!,
    // The CLI's own launcher, as `npm start` runs it: the bundle of the sources (made again when
    // a source changed, services/launch/build.mjs), from source through tsx where none can be made.
    [...wrapArgs, 'services/launch/bin.mjs', 'start', ...args],
    {
      cwd: ROOT,
      env: { ...process.env, UB_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }
  )
  const lines: string[] = []
  child.stderr!.on('data', (d: Buffer) => lines.push(d.toString()))
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => {
      // A null code means a signal ended it: keep which one, for the failure message.
      if (signal) lines.push(`[exited on ${signal}]\n`)
      resolve(code)
    })
  )
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`process did not start in ${startTimeoutMs} ms:\n${lines.join('')}`))
    }, startTimeoutMs)
    void exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`process exited with ${code} before ready:\n${lines.join('')}`))
    })
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line + '\n')
      if (!line.startsWith('{')) return // the human banner
      let entry: Record<string, unknown>
      try {
        entry = JSON.parse(line) as Record<string, unknown>
      } catch {
        return // a partial or foreign line; the ready line is always whole
      }
      if (entry.msg === 'ready') {
        clearTimeout(timer)
        resolve(entry)
      }
    })
  })
  const alive = () => child.exitCode === null && child.signalCode === null
  let stopping: Promise<number | null> | undefined
  return {
    ready,
    child,
    output: () => lines.join(''),
    stop: () =>
      (stopping ??= (async () => {
        if (alive()) child.kill('SIGTERM')
        return exited
      })()),
    kill: async () => {
      if (alive()) child.kill('SIGKILL')
      await exited
    },
  }
}
