import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'

const run = promisify(execFile)
const ROOT = new URL('../..', import.meta.url).pathname
const bin = (name: string) => `${ROOT}node_modules/.bin/${name}`

// The same source on three runtimes (ARCHITECTURE.md §12): Node through tsx, Deno and Bun natively.
const RUNTIMES: Array<[string, string, string[]]> = [
  ['node', process.execPath, ['--import', 'tsx', 'test/runtime/smoke.ts']],
  ['deno', bin('deno'), ['run', '-A', 'test/runtime/smoke.ts']],
  ['bun', bin('bun'), ['test/runtime/smoke.ts']],
]

describe('runtimes', () => {
  it.each(RUNTIMES)(
    'runs the embedded fabric on %s: HTTP, store, an MQTT round trip, state kept across a restart',
    async (_name, cmd, args) => {
      const { stdout } = await run(cmd, args, {
        cwd: ROOT,
        timeout: 90_000,
        env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
      })
      expect(stdout).toMatch(/http, store, mqtt, restart ok/)
    },
    120_000
  )
})
