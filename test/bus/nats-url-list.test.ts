import { afterEach, expect, it } from 'vitest'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { freePort } from '../helpers/mosquitto.ts'
import { startNatsServer, uniquePrefix } from '../helpers/nats.ts'

const closers: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {})
})

/**
 * `natsUrl` lists the servers of a cluster comma-separated (README, Configuration). nats.js took
 * the whole string as one URL and dialled a mangled address: a list whose last entry was down
 * could not connect at all, though a server before it was up.
 */
it('connects through any server of a comma-separated natsUrl', async () => {
  const server = await startNatsServer()
  closers.push(() => server.stop())
  const down = `nats://127.0.0.1:${await freePort()}`
  for (const servers of [`${server.url},${down}`, `${down}, ${server.url}`]) {
    const bus = await connectNatsBus({ servers, prefix: uniquePrefix('urls') })
    closers.push(() => bus.close())
    await bus.flush()
    const kv = await bus.kv('probe')
    await kv.put('k', new TextEncoder().encode('v'))
    expect(new TextDecoder().decode((await kv.get('k'))!.value)).toBe('v')
  }
})
