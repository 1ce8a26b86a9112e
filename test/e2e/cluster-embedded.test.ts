import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt, eventually } from '../helpers/gateway.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'

const run = promisify(execFile)
const ROOT = new URL('../..', import.meta.url).pathname
const VERSION = (
  JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
).version

/** `uns-bridge cluster <args>` as a process: its exit code and output. */
async function cli(args: string[], env: Record<string, string | undefined>) {
  const childEnv = { ...process.env, ...env }
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k]
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ['--import', 'tsx', 'services/launch/cli.ts', 'cluster', ...args],
      { cwd: ROOT, env: childEnv }
    )
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

/** The embedded default: the four services in one process, one member each, on the in-process bus. */
describe('GET /api/v1/cluster and `uns-bridge cluster` on the embedded default', () => {
  let inst: Instance
  let token: string
  const cluster = async (auth = `Bearer ${token}`) => {
    const res = await fetch(`${inst.httpUrl}/api/v1/cluster`, { headers: { authorization: auth } })
    return { status: res.status, body: (await res.json()) as any }
  }

  beforeAll(async () => {
    // No configured token: the instance makes one in its data folder, where the CLI finds it.
    inst = await startInstance({
      args: ['--presence-interval-ms', '300'],
      env: { UB_ADMIN_TOKEN: '' },
    })
    token = readFileSync(join(inst.dataDir, 'admin-token'), 'utf8').trim()
  }, 90_000)
  afterAll(async () => {
    await inst?.stop()
  })

  it('lists every service once, all in this one process, with its facts', async () => {
    const { status, body } = await cluster()
    expect(status).toBe(200)
    expect(body.counts).toEqual({ store: 1, gateway: 1, supervisor: 1, handshake: 1 })
    expect(body.omitted).toBe(0)
    expect(body.members.map((m: any) => m.service)).toEqual([
      'store',
      'gateway',
      'supervisor',
      'handshake',
    ])
    const runIds = new Set<string>()
    for (const m of body.members) {
      expect(m).toMatchObject({ host: hostname(), pid: inst.process.child.pid, version: VERSION })
      expect(m.memberId).toMatch(new RegExp(`^${m.service}-[0-9a-f]{8}$`))
      runIds.add(m.memberId.split('-')[1])
      expect(m.uptimeMs).toBeGreaterThanOrEqual(0)
      expect(Date.parse(m.lastSeenAt)).toBeGreaterThanOrEqual(Date.parse(m.startedAt))
    }
    expect(runIds.size).toBe(1)
    const [, gateway, supervisor] = body.members
    expect(gateway.gateway.ports.mqtt).toBe(Number(new URL(inst.mqttUrl!).port))
    expect(supervisor.supervisor).toMatchObject({ bridgeCount: 0, bridges: [] })
    expect(supervisor.supervisor.supervisorId).toEqual(expect.any(String))
  })

  it('asks for the admin token', async () => {
    for (const auth of ['', `Bearer ${token}x`, 'Basic abc']) {
      const { status, body } = await cluster(auth)
      expect(status, auth).toBe(401)
      expect(body.error.code).toBe('unauthorized')
    }
  })

  it("shows the gateway's real client count, which follows clients connecting and leaving", async () => {
    const clients = async () => (await cluster()).body.members[1].gateway.clients as number
    const before = await clients()
    const client = await connectMqtt(inst.mqttUrl!, { clientId: 'cluster-view-probe' })
    try {
      await eventually(async () => (await clients()) === before + 1, 10_000)
    } finally {
      await client.endAsync()
    }
    await eventually(async () => (await clients()) === before, 10_000)
  })

  it('prints the members as a table, with the token from the environment or the data folder', async () => {
    const byEnv = await cli(['--url', inst.httpUrl], { UB_ADMIN_TOKEN: token })
    expect(byEnv.code, byEnv.stderr).toBe(0)
    const lines = byEnv.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^SERVICE\s+MEMBER\s+HOST\s+PID\s+VERSION\s+UPTIME\s+LAST SEEN/)
    for (const [i, service] of ['store', 'gateway', 'supervisor', 'handshake'].entries()) {
      expect(lines[i + 1]).toMatch(new RegExp(`^${service}\\s+${service}-[0-9a-f]{8}\\s`))
      expect(lines[i + 1]).toContain(String(inst.process.child.pid))
    }
    expect(lines[2]).toMatch(/gw-\S+: \d+ clients; mqtt \d+/)
    expect(lines.at(-1)).toBe('4 members: store 1, gateway 1, supervisor 1, handshake 1')

    const byFile = await cli(['--url', inst.httpUrl, '--data-dir', inst.dataDir, '--json'], {
      UB_ADMIN_TOKEN: undefined,
    })
    expect(byFile.code, byFile.stderr).toBe(0)
    expect(JSON.parse(byFile.stdout).counts).toEqual({
      store: 1,
      gateway: 1,
      supervisor: 1,
      handshake: 1,
    })
  })

  it('says what went wrong: a wrong token, no token, a bad flag', async () => {
    const wrong = await cli(['--url', inst.httpUrl], { UB_ADMIN_TOKEN: token + 'x' })
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/unauthorized: .*\(HTTP 401 from GET /)
    const none = await cli(['--url', inst.httpUrl, '--data-dir', join(inst.dataDir, 'nope')], {
      UB_ADMIN_TOKEN: undefined,
    })
    expect(none.code).toBe(2)
    expect(none.stderr).toContain('no admin token')
    const flag = await cli(['--bogus', 'x'], {})
    expect(flag.code).toBe(2)
    expect(flag.stderr).toContain("unknown option '--bogus'")
  })
})
