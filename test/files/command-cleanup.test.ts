import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest'
import { connectMqtt, eventually, sleep } from '../helpers/gateway.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'

const CLEANUP_MS = 500

/** The `/metrics` text of an instance (the admin token opens it). */
async function metricsOf(inst: Instance): Promise<string> {
  const res = await fetch(`${inst.httpUrl}/metrics`, {
    headers: { authorization: `Bearer ${inst.adminToken}` },
  })
  expect(res.status).toBe(200)
  return res.text()
}

/** `ub_files_deleted_total{why}` as a number (0 while the series does not exist yet). */
async function deleted(inst: Instance, why: string): Promise<number> {
  const m = new RegExp(`^ub_files_deleted_total\\{why="${why}"\\} (\\d+)$`, 'm').exec(
    await metricsOf(inst)
  )
  return m ? Number(m[1]) : 0
}

/** Poll GET until it answers `status`; the time it took. */
async function untilStatus(url: string, status: number, timeoutMs: number): Promise<number> {
  const start = Date.now()
  for (;;) {
    const res = await fetch(url)
    // The body is not read: a GET racing the removal may be answered 404 with the vanished
    // file's Content-Length (see files-fuzz.test.ts, 'a GET racing a DELETE'), and reading it
    // would wait for bytes that never come.
    await res.body?.cancel()
    if (res.status === status) return Date.now() - start
    if (Date.now() - start > timeoutMs)
      throw new Error(`GET ${url} still answers ${res.status} after ${timeoutMs} ms`)
    await sleep(50)
  }
}

/**
 * Where the embedded blob bucket keeps a file's description (in-process-blobs.ts:
 * `<dataDir>/bus/blobs/<prefix>_files/m/<sha256 of name>.json`).
 */
function metaPath(inst: Instance, name: string): string {
  const root = join(inst.dataDir, 'bus', 'blobs')
  const [bucket, ...others] = readdirSync(root).filter((d) => d.endsWith('_files'))
  expect(bucket, `one files bucket in ${root}`).toBeDefined()
  expect(others).toEqual([])
  const meta = join(root, bucket!, 'm')
  expect(existsSync(meta)).toBe(true)
  return join(meta, createHash('sha256').update(name).digest('hex') + '.json')
}

/**
 * Files do not pile up: the file a te/ command's `tedgeUrl` names goes `filesCommandCleanupMs`
 * after the command ended (`successful` or `failed`), as the gateway reports it from the device's
 * status message; and a file past its `Ub-Ttl` is 404 at once and swept later.
 */
describe('file cleanup after a te/ command and on expiry (real instance, real MQTT)', () => {
  let inst: Instance
  let device: MqttClient
  const url = (path: string) => `${inst.httpUrl}/te/v1/files/${path}`

  beforeAll(async () => {
    inst = await startInstance({ args: ['--files-command-cleanup-ms', String(CLEANUP_MS)] })
    // A thin-edge.io agent on the same host: anonymous from loopback.
    device = await connectMqtt(inst.mqttUrl!, { clientId: 'te-child01-agent' })
  }, 60_000)
  afterAll(async () => {
    await device?.endAsync(true)
    await inst?.stop()
  })
  // What the instance logged last, should a test fail.
  beforeEach(() => onTestFailed(() => console.log(inst.output().split('\n').slice(-30).join('\n'))))

  const put = async (path: string, body: Uint8Array | string, headers = {}) => {
    const res = await fetch(url(path), { method: 'PUT', body, headers })
    expect(res.status, `PUT ${path}`).toBe(201)
  }
  const statusOf = async (path: string) => {
    const res = await fetch(url(path))
    await res.arrayBuffer()
    return res.status
  }
  /** A firmware_update command's status message, retained, as thin-edge publishes it. */
  const command = (id: string, status: string, tedgeUrl: string) =>
    device.publishAsync(
      `te/device/child01///cmd/firmware_update/${id}`,
      JSON.stringify({ status, tedgeUrl, remoteUrl: '', name: 'fw', version: '1' }),
      { retain: true, qos: 1 }
    )

  it('keeps the file while the command runs and removes it after `successful`', async () => {
    const content = randomBytes(1500)
    await put('child01/firmware_update/fw-1.bin', content)
    const tedgeUrl = url('child01/firmware_update/fw-1.bin')
    await command('abc', 'init', tedgeUrl)
    await command('abc', 'executing', tedgeUrl)
    // The device downloads it while executing: still there, whole.
    await sleep(100)
    const got = await fetch(tedgeUrl)
    expect(got.status).toBe(200)
    expect(Buffer.from(await got.arrayBuffer()).equals(content)).toBe(true)

    await command('abc', 'successful', tedgeUrl)
    const took = await untilStatus(tedgeUrl, 404, 5_000)
    expect(took).toBeGreaterThanOrEqual(CLEANUP_MS - 100)
    // Counted once the removal returned, a moment after a GET already finds nothing (CI read 0).
    await eventually(async () => (await deleted(inst, 'command')) === 1, 2_000)
    expect(await deleted(inst, 'request')).toBe(0)
  })

  it('removes the file of a `failed` command too', async () => {
    await put('child01/firmware_update/fw-2.bin', 'firmware two')
    const tedgeUrl = url('child01/firmware_update/fw-2.bin')
    await command('def', 'init', tedgeUrl)
    await command('def', 'executing', tedgeUrl)
    await command('def', 'failed', tedgeUrl)
    await untilStatus(tedgeUrl, 404, 5_000)
    await eventually(async () => (await deleted(inst, 'command')) === 2, 2_000)
  })

  it('never removes the file of a command still `executing`', async () => {
    await put('child01/firmware_update/fw-3.bin', 'firmware three')
    const tedgeUrl = url('child01/firmware_update/fw-3.bin')
    await command('ghi', 'init', tedgeUrl)
    await command('ghi', 'executing', tedgeUrl)
    await sleep(3 * CLEANUP_MS)
    expect(await statusOf('child01/firmware_update/fw-3.bin')).toBe(200)
    expect(await deleted(inst, 'command')).toBe(2)
  })

  it('does no harm when an ended command names a file that is not there, a directory or no file', async () => {
    await put('child01/keep/a.bin', 'kept a')
    await put('child01/keep/sub/b.bin', 'kept b')
    const before = await deleted(inst, 'command')
    const urls = [
      url('child01/firmware_update/never-was.bin'),
      url('child01/keep'), // a directory: files lie under it
      url('child01/keep/sub'),
      url('child01/keep/'), // names a directory by its trailing slash
      `${inst.httpUrl}/te/v1/files/child01/%2e%2e/keep/a.bin`, // resolves to keep/a.bin: not there
      'not a url',
      'http://elsewhere.example/somefile',
      '',
    ]
    for (const [i, u] of urls.entries()) await command(`none${i}`, 'successful', u)
    await command('nul', 'failed', url('child01/firmware_update/never-was.bin'))
    await sleep(3 * CLEANUP_MS)
    expect(await statusOf('child01/keep/a.bin')).toBe(200)
    expect(await statusOf('child01/keep/sub/b.bin')).toBe(200)
    expect(await statusOf('child01/firmware_update/fw-3.bin')).toBe(200)
    expect(await deleted(inst, 'command')).toBe(before)
    expect((await fetch(`${inst.httpUrl}/healthz`)).status).toBe(200)
    // The service still cleans up after that.
    await put('child01/firmware_update/fw-4.bin', 'firmware four')
    await command('jkl', 'successful', url('child01/firmware_update/fw-4.bin'))
    await untilStatus(url('child01/firmware_update/fw-4.bin'), 404, 5_000)
    await eventually(async () => (await deleted(inst, 'command')) === before + 1, 2_000)
  })

  it('answers 404 for a file past its Ub-Ttl at once, before any sweep removed it', async () => {
    // Sweeps every minute (the default): none runs during this test.
    await put('ttl/short.bin', 'short lived', { 'ub-ttl': '1' })
    expect(await statusOf('ttl/short.bin')).toBe(200)
    await untilStatus(url('ttl/short.bin'), 404, 3_000)
    const head = await fetch(url('ttl/short.bin'), { method: 'HEAD' })
    expect(head.status).toBe(404)
    // Still stored: it is the expiry that hides it, not a removal.
    expect(existsSync(metaPath(inst, 'ttl/short.bin'))).toBe(true)
    expect(await deleted(inst, 'expired')).toBe(0)
  })
})

describe('the expiry sweep removes files past their Ub-Ttl', () => {
  let inst: Instance
  const url = (path: string) => `${inst.httpUrl}/te/v1/files/${path}`
  beforeAll(async () => {
    inst = await startInstance({ args: ['--files-sweep-ms', '200'] })
  }, 60_000)
  afterAll(async () => {
    await inst?.stop()
  })

  it('removes an expired file (counted why="expired") and keeps the others', async () => {
    for (const [path, ttl] of [
      ['ttl/one.bin', '1'],
      ['ttl/long.bin', '3600'],
      ['ttl/default.bin', undefined],
    ] as const) {
      const res = await fetch(url(path), {
        method: 'PUT',
        body: `content of ${path}`,
        headers: ttl ? { 'ub-ttl': ttl } : {},
      })
      expect(res.status).toBe(201)
    }
    expect((await fetch(url('ttl/one.bin'))).status).toBe(200)
    expect(existsSync(metaPath(inst, 'ttl/one.bin'))).toBe(true)
    const start = Date.now()
    for (;;) {
      if (!existsSync(metaPath(inst, 'ttl/one.bin')) && (await deleted(inst, 'expired')) === 1)
        break
      if (Date.now() - start > 5_000) throw new Error('the sweep did not remove ttl/one.bin')
      await sleep(50)
    }
    expect((await fetch(url('ttl/one.bin'))).status).toBe(404)
    expect(await (await fetch(url('ttl/long.bin'))).text()).toBe('content of ttl/long.bin')
    expect(await (await fetch(url('ttl/default.bin'))).text()).toBe('content of ttl/default.bin')
    expect(await deleted(inst, 'expired')).toBe(1)
  })
})
