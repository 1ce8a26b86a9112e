import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { seedPglite } from '../helpers/pg-template.ts'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, expect, it } from 'vitest'
import { freePort } from '../helpers/server-process.ts'

const ROOT = new URL('../..', import.meta.url).pathname
const START_TIMEOUT_MS = 60_000 // npm, then a cold tsx and PGlite, on a loaded 2-core box
const STOP_TIMEOUT_MS = 10_000

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c()
})

/** Parent pid and state of a live process, from /proc; null once it is gone or a zombie. */
function procStat(pid: number): { ppid: number; state: string } | null {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the last ')'.
  const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // A zombie has exited; its reaper (possibly not init, in a container) just has not waited yet.
  return state === 'Z' ? null : { ppid: Number(ppid), state: state! }
}

/** The pid and every descendant of it: npm, the script's shell if one stays, node. */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    const pid = Number(name)
    const stat = Number.isInteger(pid) ? procStat(pid) : null
    if (stat) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), pid])
  }
  const tree = [root]
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []))
  return tree
}

const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    return '(gone)'
  }
}

async function until(what: string, ms: number, check: () => boolean | Promise<boolean>) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** `npm start` as a process supervisor runs it: its own session and process group, no terminal. */
async function startWithNpm() {
  const dataDir = mkdtempSync(join(tmpdir(), 'ub-npm-start-'))
  seedPglite(dataDir) // signals are tested here, not PGlite's first start
  const [httpPort, mqttPort] = [await freePort(), await freePort()]
  const npm = spawn(
    'npm',
    [
      ...['start', '--', '--data-dir', dataDir],
      ...['--http-host', '127.0.0.1', '--http-port', String(httpPort)],
      ...['--mqtt-host', '127.0.0.1', '--mqtt-port', String(mqttPort)],
    ],
    {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, UB_LOG_LEVEL: 'info', UB_ADMIN_TOKEN: 'ubt_test_npm_start_signals' },
    }
  )
  let output = ''
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-20_000))
  npm.stdout!.on('data', keep)
  npm.stderr!.on('data', keep)
  const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)))
  let tree: number[] = [npm.pid!]
  cleanups.push(() => {
    for (const pid of tree) if (procStat(pid)) process.kill(pid, 'SIGKILL')
    rmSync(dataDir, { recursive: true, force: true })
  })
  await until(`/healthz on :${httpPort}\n${output}`, START_TIMEOUT_MS, async () => {
    if (npm.exitCode !== null) throw new Error(`npm start exited early:\n${output}`)
    const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => null)
    return res?.status === 200
  })
  tree = processTree(npm.pid!)
  return { npm, dataDir, tree, exited, output: () => output }
}

async function expectAllGone(
  started: Awaited<ReturnType<typeof startWithNpm>>,
  send: (npm: ChildProcess) => void
) {
  const { npm, dataDir, tree } = started
  const node = tree.find((pid) => commandLine(pid).includes('services/launch/bin.mjs start'))
  expect(node, tree.map(commandLine).join('\n')).toBeDefined()
  expect(existsSync(join(dataDir, 'uns-bridge.pid'))).toBe(true)
  send(npm)
  await until(
    `stopping ${tree.map((pid) => `${pid} ${commandLine(pid)}`).join('; ')}`,
    STOP_TIMEOUT_MS,
    () => tree.every((pid) => procStat(pid) === null)
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${started.output()}`)
  })
  expect(await started.exited, started.output()).toBe(0)
  // Released by the clean stop, not merely left for the next start to take over.
  expect(existsSync(join(dataDir, 'uns-bridge.pid')), started.output()).toBe(false)
  expect(started.output()).toContain('"msg":"stopped"')
}

it('stops npm, its script and node on SIGTERM to the npm pid (a process supervisor)', async () => {
  await expectAllGone(await startWithNpm(), (npm) => npm.kill('SIGTERM'))
}, 90_000)

it('stops npm, its script and node on SIGINT to the npm pid', async () => {
  await expectAllGone(await startWithNpm(), (npm) => npm.kill('SIGINT'))
}, 90_000)

it('stops cleanly on SIGINT to the whole process group (Ctrl-C in a terminal)', async () => {
  // The terminal signals every process of the group, and npm forwards its copy: node sees two.
  await expectAllGone(await startWithNpm(), (npm) => process.kill(-npm.pid!, 'SIGINT'))
}, 90_000)
