import { execFile } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { seedPglite } from '../helpers/pg-template.ts'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { connectAsync } from 'mqtt'
import { afterAll, describe, expect, it } from 'vitest'
import { verifyPassword } from '../../services/gateway/index.ts'
import { FLUSH_DELAY_MS } from '../../services/common/bus/kv-journal.ts'
import { collect, connectMqtt } from '../helpers/gateway.ts'
import { startInstance } from '../helpers/instance.ts'

const run = promisify(execFile)
const ROOT = new URL('../..', import.meta.url).pathname

describe('embedded start (one process, PGlite, in-process bus)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ub-embedded-'))
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

  it('makes an instance ID and an admin token at first start and keeps both across restarts', async () => {
    // An empty UB_ADMIN_TOKEN means "not configured": the instance must make its own.
    chmodSync(dataDir, 0o755) // as a folder made by hand would be
    const first = await startInstance({ dataDir, env: { UB_ADMIN_TOKEN: '' } })
    const tokenFile = join(dataDir, 'admin-token')
    const token = readFileSync(tokenFile, 'utf8').trim()
    expect(first.instanceId).toMatch(/^UB_[A-Za-z0-9]{6}$/)
    expect(token).toMatch(/^ubt_/)
    expect(statSync(tokenFile).mode & 0o077).toBe(0) // owner-only, like an SSH key
    // The database, the bus journal and the token: other local users read none of them.
    expect(statSync(dataDir).mode & 0o777).toBe(0o700)
    expect(statSync(join(dataDir, 'bus')).mode & 0o777).toBe(0o700)
    expect(first.output()).toContain(`admin token: ${token}`)

    const health = await fetch(`${first.httpUrl}/healthz`)
    expect({ status: health.status, body: await health.json() }).toEqual({
      status: 200,
      body: { status: 'ok' },
    })
    const ready = await fetch(`${first.httpUrl}/readyz`)
    expect(ready.status).toBe(200)
    expect(await first.stop(), first.output()).toBe(0)

    const second = await startInstance({ dataDir, env: { UB_ADMIN_TOKEN: '' } })
    let exitCode: number | null = null
    try {
      expect(second.instanceId).toBe(first.instanceId)
      expect(readFileSync(tokenFile, 'utf8').trim()).toBe(token)
      expect(second.output()).not.toContain(token) // printed in full only when it was made
    } finally {
      exitCode = await second.stop()
    }
    expect(exitCode, second.output()).toBe(0)
  })

  it('keeps retained messages and persistent sessions with their queued QoS 1 across a SIGKILL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ub-durable-'))
    seedPglite(dir) // durability is tested here; the first test starts on an empty folder
    try {
      const first = await startInstance({ dataDir: dir })
      const away = await connectMqtt(first.mqttUrl!, { clientId: 'durable-sub', clean: false })
      await away.subscribeAsync('plant/#', { qos: 1 })
      await away.endAsync()
      // A live subscriber: a QoS 1 message reaches it only after the queue copy for the
      // persistent session was written to the bus KV (aedes enqueues before it emits); the KV
      // journal writes it to disk within FLUSH_DELAY_MS after that.
      const witness = await connectMqtt(first.mqttUrl!)
      const seenLive = collect(witness)
      await witness.subscribeAsync('plant/#', { qos: 1 })
      const pub = await connectMqtt(first.mqttUrl!)
      await pub.publishAsync('plant/state', 'running', { qos: 1, retain: true })
      for (let i = 0; i < 50; i++) await pub.publishAsync('plant/seq', String(i), { qos: 1 })
      await seenLive.waitFor(51)
      pub.end(true)
      witness.end(true)
      await new Promise((r) => setTimeout(r, FLUSH_DELAY_MS * 25))
      await first.kill()

      const second = await startInstance({ dataDir: dir })
      try {
        let queued!: ReturnType<typeof collect>
        const back = await connectMqtt(
          second.mqttUrl!,
          { clientId: 'durable-sub', clean: false },
          (c) => (queued = collect(c))
        )
        const msgs = await queued.waitFor(51)
        back.end(true)
        expect(msgs[0]).toMatchObject({ topic: 'plant/state', payload: 'running', qos: 1 })
        expect(msgs.filter((m) => m.topic === 'plant/seq').map((m) => Number(m.payload))).toEqual(
          Array.from({ length: 50 }, (_, i) => i)
        )
        const fresh = await connectMqtt(second.mqttUrl!)
        const retained = collect(fresh)
        await fresh.subscribeAsync('plant/state', { qos: 1 })
        expect(await retained.waitFor(1)).toEqual([
          { topic: 'plant/state', payload: 'running', retain: true, qos: 1 },
        ])
        fresh.end(true)
      } finally {
        await second.stop()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('refuses a second process on the same data folder, naming the key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ub-locked-'))
    seedPglite(dir)
    const first = await startInstance({ dataDir: dir })
    try {
      const second = await run(
        process.execPath,
        [
          '--import',
          'tsx',
          'services/launch/cli.ts',
          'start',
          '--data-dir',
          dir,
          '--http-port',
          '0',
        ],
        { cwd: ROOT, env: { ...process.env, UB_MQTT_PORT: '0' } }
      ).then(
        () => null,
        (err: { code: number; stderr: string }) => err
      )
      expect(second?.code).toBe(2)
      expect(second?.stderr).toMatch(/'dataDir'.*in use by process \d+/)
      expect((await fetch(`${first.httpUrl}/healthz`)).status).toBe(200)
    } finally {
      await first.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("shows its gateway's clients, messages, bytes and retained count on /api/v1/instance and /metrics", async () => {
    const inst = await startInstance()
    const client = await connectAsync(inst.mqttUrl!, {
      clientId: 'stats-probe',
      reconnectPeriod: 0,
    })
    try {
      await client.publishAsync('plant1/line3/temp', Buffer.alloc(100, 1), { qos: 1, retain: true })
      const auth = { authorization: `Bearer ${inst.adminToken}` }
      const res = await fetch(`${inst.httpUrl}/api/v1/instance`, { headers: auth })
      const body = (await res.json()) as any
      expect(res.status).toBe(200)
      expect(body.gateways).toHaveLength(1)
      expect(body.gateways[0]).toMatchObject({ clients: 1, retained: 1 })
      expect(body.gateways[0].messagesIn).toBeGreaterThanOrEqual(1)
      expect(body.gateways[0].bytesIn).toBeGreaterThanOrEqual(100)
      const metrics = await (await fetch(`${inst.httpUrl}/metrics`, { headers: auth })).text()
      expect(metrics).toMatch(/ub_gateway_clients_connected\{[^}]*\} 1/)
      expect((await fetch(`${inst.httpUrl}/metrics`)).status).toBe(401)
    } finally {
      await client.endAsync()
      await inst.stop()
    }
  })

  it('exits 2 with a message naming the key when the config is wrong', async () => {
    const failed = await run(
      process.execPath,
      ['--import', 'tsx', 'services/launch/cli.ts', 'start', '--mqtt-port', 'x'],
      {
        cwd: ROOT,
      }
    ).then(
      () => null,
      (err: { code: number; stderr: string }) => err
    )
    expect(failed?.code).toBe(2)
    expect(failed?.stderr).toMatch(/'mqttPort'.*--mqtt-port/)
  })

  it('prints its version and help', async () => {
    const version = await run(
      process.execPath,
      ['--import', 'tsx', 'services/launch/cli.ts', 'version'],
      {
        cwd: ROOT,
      }
    )
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
    const help = await run(
      process.execPath,
      ['--import', 'tsx', 'services/launch/cli.ts', 'help'],
      {
        cwd: ROOT,
      }
    )
    expect(help.stdout).toContain('--database-url')
  })

  it('hashes a password from stdin for the users config key', async () => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', 'services/launch/cli.ts', 'hash-password'],
      { cwd: ROOT }
    )
    const out = new Promise<string>((resolve, reject) => {
      let text = ''
      child.stdout!.on('data', (d: Buffer) => (text += d.toString()))
      child.once('exit', (code) =>
        code === 0 ? resolve(text.trim()) : reject(new Error(`exit ${code}`))
      )
    })
    child.stdin!.end('s3cret pass\n')
    const hash = await out
    expect(hash).toMatch(/^scrypt\$/)
    expect(await verifyPassword('s3cret pass', hash)).toBe(true)
    expect(await verifyPassword('s3cret pas', hash)).toBe(false)
  })
})
