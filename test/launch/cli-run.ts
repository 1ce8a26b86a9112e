import { spawn } from 'node:child_process'
import { expect } from 'vitest'

const ROOT = new URL('../..', import.meta.url).pathname

export interface CliRun {
  /** Null when it was still running at the deadline (then killed). */
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/**
 * The settings a run must not inherit from the shell or CI (which set DATABASE_URL and NATS_URL
 * for the tests' own clients). Removed, not emptied: an empty UB_NATS_URL would hide NATS_URL.
 */
const INHERITED = [
  'NATS_URL',
  'DATABASE_URL',
  'UB_NATS_URL',
  'UB_DATABASE_URL',
  'UB_ADMIN_TOKEN',
  'UB_SECRET_KEY',
  'UB_HTTP_PORT',
  'UB_MQTT_PORT',
  'UB_HTTP_TLS',
  'UB_SERVICES',
  'UB_BUS_PREFIX',
  'UB_DATA_DIR',
]

/** This process's environment without the fabric's settings, then `env` on top. */
export function cleanEnv(env: Record<string, string>): Record<string, string | undefined> {
  const base: Record<string, string | undefined> = { ...process.env }
  for (const name of INHERITED) delete base[name]
  return { ...base, UB_LOG_LEVEL: 'info', ...env }
}

/** `uns-bridge <args>` as its own process, to its exit (or SIGKILL at `timeoutMs`). */
export function runCli(
  args: string[],
  { env = {}, timeoutMs = 20_000 }: { env?: Record<string, string>; timeoutMs?: number } = {}
): Promise<CliRun> {
  const started = Date.now()
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/launch/cli.ts', ...args], {
    cwd: ROOT,
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: Date.now() - started })
    })
  )
}

/**
 * A setting to fix: exit code 2 and one line on stderr naming the key, with no stack trace
 * anywhere in the output. Returns that line.
 */
export function expectOneLineNaming(run: CliRun, key: string): string {
  const all = `exit ${run.code} after ${run.ms} ms\nstderr:\n${run.stderr}\nstdout:\n${run.stdout}`
  const lines = run.stderr.split('\n').filter((l) => l.trim() !== '')
  expect(lines, all).toHaveLength(1)
  expect(lines[0], all).toMatch(new RegExp(`^uns-bridge: config error: '${key}' `))
  expect(run.stderr + run.stdout, all).not.toMatch(/^ {4}at /m)
  expect(run.code, all).toBe(2)
  return lines[0]!
}
