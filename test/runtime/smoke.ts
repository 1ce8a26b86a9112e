/**
 * Runtime smoke test: the same services on Node, Deno and Bun. Starts the embedded fabric
 * (PGlite + in-process bus, with the handshake API and the gateway), checks /healthz and one
 * authenticated API call over a real socket, an MQTT round trip through the gateway, a retained
 * message kept across a restart on the same data folder, then stops.
 * Prints `1 passed, 0 failed` or exits non-zero.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { loadConfig } from '../../services/common/config.ts'
import { silentLogger } from '../../services/common/log.ts'
import { startFabric } from '../../services/launch/main.ts'

const runtime =
  'Deno' in globalThis ? 'deno' : 'Bun' in globalThis ? 'bun' : `node ${process.version}`
const dataDir = mkdtempSync(join(tmpdir(), 'ub-rt-'))
const adminToken = 'ubt_runtime_smoke_token'
const { config, explicit } = loadConfig({
  argv: ['--data-dir', dataDir, '--http-host', '127.0.0.1', '--http-port', '0'],
  env: {
    UB_MQTT_PORT: '0',
    UB_MQTT_HOST: '127.0.0.1',
    UB_ADMIN_TOKEN: adminToken,
    UB_SERVICES: 'store,gateway,handshake',
  },
})
let fabric = await startFabric({ config, explicit, log: silentLogger() })
try {
  const health = await fetch(`${fabric.httpUrl}/healthz`)
  if (health.status !== 200) throw new Error(`/healthz answered ${health.status}`)
  const instance = await fetch(`${fabric.httpUrl}/api/v1/instance`, {
    headers: { authorization: `Bearer ${adminToken}` },
  })
  const body = (await instance.json()) as { instanceId?: string }
  if (body.instanceId !== fabric.instanceId) throw new Error(`instance: ${JSON.stringify(body)}`)
  const client = await mqtt.connectAsync(fabric.mqttUrl!, {
    clientId: `smoke-${runtime.split(' ')[0]}`,
  })
  const got = new Promise<string>((resolve) =>
    client.on('message', (_t, p) => resolve(p.toString()))
  )
  await client.subscribeAsync('smoke/#', { qos: 1 })
  await client.publishAsync('smoke/x', `hello from ${runtime}`, { qos: 1 })
  const payload = await got
  if (payload !== `hello from ${runtime}`) throw new Error(`mqtt payload: ${payload}`)
  // Retained state outlives a restart on the same data folder (the in-process bus's KV files).
  await client.publishAsync('smoke/state', `kept on ${runtime}`, { qos: 1, retain: true })
  await client.endAsync()
  await fabric.close()
  fabric = await startFabric({ config, explicit, log: silentLogger() })
  const again = await mqtt.connectAsync(fabric.mqttUrl!, { clientId: 'smoke-again' })
  const kept = new Promise<string>((resolve) =>
    again.on('message', (_t, p) => resolve(p.toString()))
  )
  await again.subscribeAsync('smoke/state', { qos: 1 })
  const state = await Promise.race([
    kept,
    new Promise<string>((resolve) => setTimeout(() => resolve('(nothing in 5 s)'), 5_000)),
  ])
  if (state !== `kept on ${runtime}`) throw new Error(`retained after restart: ${state}`)
  await again.endAsync()
  console.log(`${runtime}: http, store, mqtt, restart ok`)
  console.log('1 passed, 0 failed')
} finally {
  await fabric.close()
  rmSync(dataDir, { recursive: true, force: true })
}
process.exit(0)
