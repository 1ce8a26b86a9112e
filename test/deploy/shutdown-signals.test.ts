import { spawn } from 'node:child_process'
import { afterEach, expect, it } from 'vitest'
import { REPEAT_GRACE_MS } from '../../services/launch/runtime/signals.ts'

const ROOT = new URL('../..', import.meta.url).pathname

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

/** Start the slow-shutdown fixture; resolves once its signal handlers are installed. */
async function startFixture() {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/deploy/slow-shutdown.ts'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code))
  )
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', () => output.includes('listening') && resolve())
    void exited.then(() => reject(new Error(`fixture exited before listening:\n${output}`)))
  })
  return { child, exited, output: () => output }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

it('finishes its cleanup when one Ctrl-C arrives twice (from the terminal and from npm)', async () => {
  const fixture = await startFixture()
  fixture.child.kill('SIGINT')
  await sleep(20) // npm's forwarded copy trails the terminal's by a few ms
  fixture.child.kill('SIGINT')
  expect(await fixture.exited, fixture.output()).toBe(0)
  expect(fixture.output()).toContain('stopped')
})

it('still exits at once on a second signal sent well after the first', async () => {
  const fixture = await startFixture()
  fixture.child.kill('SIGTERM')
  await sleep(REPEAT_GRACE_MS + 300)
  fixture.child.kill('SIGTERM')
  expect(await fixture.exited, fixture.output()).toBe(130)
  expect(fixture.output()).toContain('stopping on SIGTERM')
  expect(fixture.output()).not.toContain('stopped')
})
