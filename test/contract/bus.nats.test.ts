import { afterAll, describe, expect, it } from 'vitest'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { createTestNatsBus, startNatsServer, uniquePrefix } from '../helpers/nats.ts'
import { busContract } from './bus.contract.ts'

// Real nats-server (2.9.10 on CI); every bus gets a fresh prefix unless it is a replica.
busContract('nats', ({ prefix } = {}) => createTestNatsBus(prefix ? { prefix } : {}))

describe('nats bus connection', () => {
  const stops: Array<() => Promise<void>> = []
  afterAll(async () => {
    await Promise.all(stops.map((s) => s()))
  })

  it('fails with a clear error naming JetStream when the server has it disabled', async () => {
    const server = await startNatsServer({ jetstream: false })
    stops.push(() => server.stop())
    const err = await connectNatsBus({ servers: server.url }).catch((e) => e)
    expect(err).toMatchObject({ code: 'bus_unsupported' })
    expect(err.message).toMatch(/JetStream disabled/)
  })

  it('fails with bus_unavailable when nothing listens', async () => {
    const server = await startNatsServer()
    await server.stop()
    const err = await connectNatsBus({ servers: server.url }).catch((e) => e)
    expect(err).toMatchObject({ code: 'bus_unavailable' })
  })

  it('talks to a private server started by the helper', async () => {
    await using server = await startNatsServer()
    const bus = await connectNatsBus({ servers: server.url, prefix: uniquePrefix('priv') })
    await bus.serve('svc.ping', () => new TextEncoder().encode('pong'))
    const reply = await bus.request('svc.ping', new Uint8Array(0))
    expect(new TextDecoder().decode(reply.data)).toBe('pong')
    await bus.close()
  })
})

describe('nats KV keys()', () => {
  // NATS.js's own keys() ends only when its consumer has nothing pending, which never happens
  // while keys under the filter keep being written (a gateway's outgoing queue does exactly that).
  it('lists a snapshot of the live keys while keys under the filter are written and deleted', async () => {
    const bus = await createTestNatsBus()
    try {
      const kv = await bus.kv('churn')
      const value = new TextEncoder().encode('x')
      for (let i = 0; i < 50; i++) await kv.put(`c1.k${i}`, value)
      await kv.put('other.a', value)
      let stop = false
      const churn = (async () => {
        for (let i = 1_000; !stop; i++) {
          await kv.put(`c1.k${i}`, value)
          await kv.delete(`c1.k${i}`)
        }
      })()
      try {
        for (let round = 0; round < 20; round++) {
          const stable = (await kv.keys('c1.>')).filter((k) => /^c1\.k\d\d?$/.test(k))
          expect(stable.sort()).toEqual(Array.from({ length: 50 }, (_, i) => `c1.k${i}`).sort())
        }
      } finally {
        stop = true
        await churn
      }
      expect(await kv.keys('nothing.>')).toEqual([])
      expect((await kv.keys()).sort()).toContain('other.a')
    } finally {
      await bus.close()
    }
  })
})
