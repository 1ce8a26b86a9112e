import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { launchProcess } from '../../deploy/launch.ts'
import { seedPglite } from '../helpers/pg-template.ts'

/** Listen on `port` (all addresses, as the default mqttHost); null when it is taken already. */
function occupy(port: number): Promise<Server | null> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' ? resolve(null) : reject(err)
    )
    server.listen(port, '0.0.0.0', () => resolve(server))
  })
}

const close = (server: Server | null) =>
  new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))

/**
 * The embedded default with 1883 taken (this machine's Mosquitto, or this test): the ephemeral
 * port it falls back to is kept in the data folder and used again at the next start while it is
 * free, so a downstream configured with it keeps working across restarts.
 */
describe('the default MQTT port, when 1883 is taken', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ub-mqtt-port-'))
  seedPglite(dataDir) // what is tested is the port, not PGlite's first start
  const env = { UB_ADMIN_TOKEN: 'ubt_test_' + randomBytes(12).toString('hex') }
  const args = ['--data-dir', dataDir, '--http-host', '127.0.0.1', '--http-port', '0']
  let holder: Server | null = null
  const held: Server[] = []

  beforeAll(async () => {
    holder = await occupy(1883) // null: something else holds it, as wanted
  })
  afterAll(async () => {
    await close(holder)
    for (const s of held) await close(s)
    rmSync(dataDir, { recursive: true, force: true })
  })

  const startedPort = async () => {
    const proc = await launchProcess({ args, env })
    try {
      return Number(new URL(proc.ready.mqtt as string).port)
    } finally {
      expect(await proc.stop()).toBe(0)
    }
  }

  it('keeps the port it fell back to, and uses it again at the next start', async () => {
    const first = await startedPort()
    expect(first).not.toBe(1883)
    expect(readFileSync(join(dataDir, 'mqtt-port'), 'utf8').trim()).toBe(String(first))
    expect(await startedPort()).toBe(first)
  }, 120_000)

  it('takes (and keeps) a new one when the remembered port is taken too', async () => {
    const before = Number(readFileSync(join(dataDir, 'mqtt-port'), 'utf8'))
    const blocker = await occupy(before)
    expect(blocker).not.toBeNull()
    held.push(blocker!)
    const next = await startedPort()
    expect(next).not.toBe(before)
    expect(next).not.toBe(1883)
    expect(Number(readFileSync(join(dataDir, 'mqtt-port'), 'utf8'))).toBe(next)
  }, 120_000)
})
