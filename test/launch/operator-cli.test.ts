import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { operatorCommand } from '../../services/launch/commands/index.ts'
import { until } from '../helpers/bridging.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'
import { cleanEnv } from './cli-run.ts'

/**
 * The operator CLI against two real instances: A asks B for a connection, B's operator accepts,
 * A binds and activates, and both sides read the logs, all through `uns-bridge <command>` run
 * in-process (its stdout, stderr and exit code captured), one run through the real bin.
 */
const ROOT = new URL('../..', import.meta.url).pathname
const POLL = ['--handshake-poll-ms', '100', '--handshake-slow-poll-ms', '400']

let a: Instance
let b: Instance
const noTokenDir = mkdtempSync(join(tmpdir(), 'ub-cli-none-'))

beforeAll(async () => {
  ;[a, b] = await Promise.all([startInstance({ args: POLL }), startInstance({ args: POLL })])
})
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
  rmSync(noTokenDir, { recursive: true, force: true })
})

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** `uns-bridge <argv>` in this process, aimed at `inst` through UB_URL and UB_ADMIN_TOKEN. */
async function cli(inst: Instance | null, argv: string[], signal?: AbortSignal): Promise<Run> {
  let stdout = ''
  let stderr = ''
  const env = inst ? { UB_URL: inst.httpUrl, UB_ADMIN_TOKEN: inst.adminToken } : {}
  const code = await operatorCommand(argv, {
    out: (t) => void (stdout += t),
    err: (t) => void (stderr += t),
    env: { ...env, UB_DATA_DIR: noTokenDir },
    ...(signal ? { signal } : {}),
  })
  return { code, stdout, stderr }
}

/** The run's one JSON document (it must succeed and print nothing else). */
async function json(inst: Instance, argv: string[]): Promise<any> {
  const run = await cli(inst, [...argv, '--json'])
  expect(run.code, run.stderr).toBe(0)
  return JSON.parse(run.stdout)
}

const noStack = (run: Run) => expect(run.stdout + run.stderr).not.toMatch(/^\s+at /m)

describe('uns-bridge operator commands', () => {
  it('runs the whole handshake and bridge lifecycle across two instances', async () => {
    const created = await json(a, [
      ...['upstreams', 'create', '--host', 'mqtt://127.0.0.1'],
      ...['--broker-port', new URL(b.mqttUrl!).port, '--http-port', new URL(b.httpUrl).port],
    ])
    expect(created.status).toBe('Pending')
    const id = created.id as string

    const request = await until('the request on B', async () => {
      const pending = await json(b, ['requests', 'list', '--status', 'Pending'])
      return (pending as any[]).find((r) => r.instanceId === a.instanceId)
    })
    const table = await cli(b, ['requests', 'list'])
    expect(table.stdout).toMatch(/^ID\s+INSTANCE\s+SOURCE IP\s+STATUS/)
    expect(table.stdout).toContain(request.id)

    // Follow the request's log on B from now on; it must see the acceptance and the revocation.
    const stopFollow = new AbortController()
    const followed = cli(b, ['log', 'request', request.id, '--follow'], stopFollow.signal)

    const accepted = await json(b, ['requests', 'accept', request.id, '--grant', 'acme'])
    expect(accepted).toMatchObject({ status: 'Accepted', grants: ['acme'] })

    await until('Approved on A', async () => {
      const shown = await json(a, ['upstreams', 'show', id])
      return shown.status === 'Approved' ? true : undefined
    })
    const bound = await cli(a, [
      ...['upstreams', 'bind', id, 'plant1/line3:acme/plant1/line3'],
      'cmd/plant1:acme/cmd/plant1:in',
    ])
    expect(bound.code, bound.stderr).toBe(0)
    expect(bound.stdout).toContain('plant1/line3 → acme/plant1/line3 (out)')
    expect(bound.stdout).toContain('cmd/plant1 → acme/cmd/plant1 (in)')

    const active = await cli(a, ['upstreams', 'activate', id])
    expect(active.code, active.stderr).toBe(0)
    expect(active.stdout).toMatch(/^status\s+Active$/m)

    const status = await until('the link in status', async () => {
      const s = await json(a, ['status'])
      return s.upstreams[0]?.link ? s : undefined
    })
    expect(status.instance.instanceId).toBe(a.instanceId)
    expect(status.upstreams).toMatchObject([{ id, status: 'Active', active: true }])
    const statusTable = await cli(a, ['status'])
    expect(statusTable.code).toBe(0)
    expect(statusTable.stdout).toMatch(new RegExp(`^instance\\s+${a.instanceId}$`, 'm'))
    expect(statusTable.stdout).toMatch(
      new RegExp(`^${id}\\s+mqtt://127.0.0.1:\\S+\\s+Active\\s+yes`, 'm')
    )

    const route = await json(a, ['route', 'plant1/line3'])
    expect(route.out).toMatchObject([{ upstreamId: id, topic: 'acme/plant1/line3' }])

    const inactive = await json(a, ['upstreams', 'deactivate', id])
    expect(inactive).toMatchObject({ status: 'Approved', active: false })

    const log = await json(a, ['log', 'upstream', id])
    expect(log.map((t: any) => t.to)).toEqual(
      expect.arrayContaining(['Pending', 'Approved', 'Active'])
    )
    expect(log.every((t: any) => t.verified === true)).toBe(true)
    const logTable = await cli(a, ['log', 'upstream', id, '--page-size', '2'])
    expect(logTable.stdout.split('\n').filter(Boolean)).toHaveLength(log.length + 1)
    expect(logTable.stdout).toMatch(/upstream\.activate\s+Approved\s+Active\s+operator/)

    const approvedAt = log.find((t: any) => t.to === 'Approved').seq as number
    const replay = await cli(a, ['replay', 'upstream', id, '--to', String(approvedAt)])
    expect(replay.code, replay.stderr).toBe(0)
    expect(replay.stdout).toMatch(/^state\s+Approved$/m)
    expect(replay.stdout).toMatch(/^chain\s+verifies/m)
    const replayed = await json(a, ['replay', 'upstream', id, '--to', String(approvedAt)])
    expect(replayed).toMatchObject({ to: approvedAt, state: 'Approved', verify: { ok: true } })

    expect(await json(b, ['requests', 'revoke', request.id])).toMatchObject({ status: 'Revoked' })
    const deleted = await json(a, ['upstreams', 'delete', id])
    expect(deleted).toMatchObject({ status: 'Deleted', withdrawal: { ok: true } })
    expect((await json(a, ['upstreams', 'list'])).map((u: any) => u.status)).toEqual(['Deleted'])

    await until('the follow to see Revoked', async () => {
      // the follow's output so far is only readable once it ends: poll the log instead
      const rows = await json(b, ['log', 'request', request.id])
      return rows.some((t: any) => t.to === 'Revoked') ? true : undefined
    })
    await new Promise((r) => setTimeout(r, 500))
    stopFollow.abort()
    const follow = await followed
    expect(follow.code, follow.stderr).toBe(0)
    expect(follow.stdout).toMatch(/request\.accept\s+Pending\s+Accepted/)
    expect(follow.stdout).toMatch(/request\.revoke\s+Accepted\s+Revoked/)
  }, 90_000)

  it('refuses usage errors with exit code 2 and a message, no stack', async () => {
    const cases = [
      ['upstreams', 'bind', 'up_x', 'only-a-source'],
      ['upstreams', 'bind', 'up_x', 'a/b:c/d:sideways'],
      ['upstreams', 'bind', 'up_x'],
      ['upstreams', 'create', '--broker-port', '1883'],
      ['upstreams', 'create', '--host', 'mqtt://x', '--broker-port', 'lots'],
      ['upstreams', 'frobnicate'],
      ['upstreams'],
      ['log', 'machine', 'x'],
      ['replay', 'upstream', 'x', '--to', '-1'],
      ['requests', 'accept'],
      ['route'],
    ]
    for (const argv of cases) {
      const run = await cli(a, argv)
      expect(run.code, argv.join(' ')).toBe(2)
      expect(run.stderr.trim(), argv.join(' ')).not.toBe('')
      expect(run.stdout, argv.join(' ')).toBe('')
      noStack(run)
    }
    const noToken = await cli(null, ['status', '--url', a.httpUrl])
    expect(noToken.code).toBe(2)
    expect(noToken.stderr).toContain('no admin token')
  })

  it("fails with exit code 1 and the API's error code", async () => {
    for (const argv of [
      ['upstreams', 'show', 'up_nope'],
      ['requests', 'revoke', 'rq_nope'],
      ['log', 'upstream', 'up_nope'],
    ]) {
      const run = await cli(a, argv)
      expect(run.code, argv.join(' ')).toBe(1)
      expect(run.stderr).toMatch(/not_found: .*\(HTTP 404 from /)
      expect(run.stdout).toBe('')
      noStack(run)
    }
    const wrongToken = await cli(null, ['status', '--url', a.httpUrl, '--token', 'ubt_wrong'])
    expect(wrongToken.code).toBe(1)
    expect(wrongToken.stderr).toContain('unauthorized')
    const unreachable = await cli(null, ['cluster', '--url', 'http://127.0.0.1:9', '--token', 't'])
    expect(unreachable.code).toBe(1)
    expect(unreachable.stderr).toMatch(/cannot reach http:\/\/127\.0\.0\.1:9\/api\/v1\/cluster/)
  })

  it('prints --help for every command and subcommand with exit code 0', async () => {
    const commands = [
      ...[
        'list',
        'create',
        'show',
        'bind',
        'activate',
        'deactivate',
        'refresh',
        'request',
        'delete',
      ].map((s) => ['upstreams', s]),
      ...['list', 'show', 'accept', 'decline', 'revoke'].map((s) => ['requests', s]),
      ['upstreams'],
      ['requests'],
      ['log'],
      ['replay'],
      ['status'],
      ['route'],
      ['cluster'],
    ]
    for (const argv of commands) {
      const run = await cli(null, [...argv, '--help'])
      expect(run.code, argv.join(' ')).toBe(0)
      expect(run.stdout).toContain(`Usage: uns-bridge ${argv.join(' ')}`)
    }
    const cluster = await cli(a, ['cluster'])
    expect(cluster.code, cluster.stderr).toBe(0)
    expect(cluster.stdout).toMatch(/^SERVICE\s+MEMBER/)
  })

  it('exits through the real bin: 1 with the error code, 0 for start --help', async () => {
    const bin = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          ['services/launch/bin.mjs', ...args],
          {
            cwd: ROOT,
            env: cleanEnv({ UB_URL: a.httpUrl, UB_ADMIN_TOKEN: a.adminToken }),
            timeout: 20_000,
          },
          (err, stdout, stderr) =>
            resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr })
        )
      })
    const missing = await bin(['upstreams', 'show', 'up_nope'])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/^uns-bridge upstreams show: not_found: /)
    expect(missing.stderr).not.toMatch(/^\s+at /m)
    const usage = await bin(['requests', 'accept'])
    expect(usage.code).toBe(2)
    const list = await bin(['upstreams', 'list', '--json'])
    expect(list.code, list.stderr).toBe(0)
    expect(Array.isArray(JSON.parse(list.stdout))).toBe(true)
    const startHelp = await bin(['start', '--help'])
    expect(startHelp.code).toBe(0)
    expect(startHelp.stdout).toMatch(/^Usage: uns-bridge start/)
    expect(startHelp.stdout).toContain('--database-url')
  })
})
