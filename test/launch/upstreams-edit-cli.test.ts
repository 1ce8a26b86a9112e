import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/common/digest.ts'
import { operatorCommand } from '../../services/launch/commands/index.ts'
import { api, startInstance, type Instance } from '../helpers/instance.ts'

/** `uns-bridge upstreams edit` against one real instance (README, Edit an upstream). */
let a: Instance
const dir = mkdtempSync(join(tmpdir(), 'ub-cli-edit-'))
const KEY = '-----BEGIN PRIVATE KEY-----\nCLI-KEY-MATERIAL\n-----END PRIVATE KEY-----\n'
const CA = '-----BEGIN CERTIFICATE-----\nCLI-CA\n-----END CERTIFICATE-----'

beforeAll(async () => {
  a = await startInstance()
})
afterAll(async () => {
  await a?.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function cli(argv: string[]) {
  let stdout = ''
  let stderr = ''
  const code = await operatorCommand(argv, {
    out: (t) => void (stdout += t),
    err: (t) => void (stderr += t),
    env: { UB_URL: a.httpUrl, UB_ADMIN_TOKEN: a.adminToken, UB_DATA_DIR: dir },
  })
  return { code, stdout, stderr }
}

describe('uns-bridge upstreams edit', () => {
  it('edits the broker port and TLS, prints one JSON document, logs the key as a digest', async () => {
    const made = await api(a, 'POST', '/api/v1/upstreams', {
      kind: 'mqtt',
      host: 'mqtt://127.0.0.1',
      brokerPort: 1,
    })
    const keyFile = join(dir, 'key.pem')
    writeFileSync(keyFile, KEY)
    const run = await cli([
      ...['upstreams', 'edit', made.id, '--host', 'mqtts://127.0.0.1', '--broker-port', '8883'],
      ...['--ca', CA, '--key', keyFile, '--servername', 'broker.example', '--json'],
    ])
    expect(run.code, run.stderr).toBe(0)
    const edited = JSON.parse(run.stdout)
    expect(edited).toMatchObject({
      id: made.id,
      status: 'Approved',
      host: 'mqtts://127.0.0.1',
      brokerPort: 8883,
      tls: { ca: CA, servername: 'broker.example' },
    })
    expect(run.stdout).not.toContain('CLI-KEY-MATERIAL')
    const log = await api(a, 'GET', `/api/v1/upstreams/${made.id}/transitions`)
    const row = log.items.at(-1)
    expect(row.event.changes['tls.key']).toEqual({ from: null, to: `sha256:${sha256Hex(KEY)}` })
    expect(JSON.stringify(log)).not.toContain('CLI-KEY-MATERIAL')

    const text = await cli(['upstreams', 'edit', made.id, '--clear-tls'])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/broker port\s+8883/)
    expect((await api(a, 'GET', `/api/v1/upstreams/${made.id}`)).tls).toBeNull()
  })

  it('fails non-zero with a message: nothing to edit, bad flags, unknown id, Deleted', async () => {
    for (const argv of [
      ['upstreams', 'edit', 'up_x'],
      ['upstreams', 'edit', 'up_x', '--broker-port', 'lots'],
      ['upstreams', 'edit', 'up_x', '--insecure', '--verify'],
      ['upstreams', 'edit', 'up_x', '--clear-tls', '--servername', 'y'],
    ]) {
      const run = await cli(argv)
      expect(run.code, argv.join(' ')).toBe(2)
      expect(run.stderr.trim()).not.toBe('')
      expect(run.stdout).toBe('')
    }
    const missing = await cli(['upstreams', 'edit', 'up_nope', '--broker-port', '2'])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/not_found: /)
    const made = await api(a, 'POST', '/api/v1/upstreams', {
      kind: 'mqtt',
      host: 'mqtt://127.0.0.1',
      brokerPort: 1,
    })
    await api(a, 'DELETE', `/api/v1/upstreams/${made.id}`)
    const deleted = await cli(['upstreams', 'edit', made.id, '--broker-port', '2', '--json'])
    expect(deleted.code).toBe(1)
    expect(deleted.stderr).toMatch(/invalid_transition: /)
    expect(deleted.stdout + deleted.stderr).not.toMatch(/^\s+at /m)
  })

  it('--help names every option', async () => {
    const run = await cli(['upstreams', 'edit', '--help'])
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('Usage: uns-bridge upstreams edit')
    for (const flag of ['--host', '--broker-port', '--http-port', '--ca', '--cert', '--key'])
      expect(run.stdout).toContain(flag)
    expect(run.stdout).toContain('--servername')
  })
})
