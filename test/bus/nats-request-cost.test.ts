import { RequestOne } from '@nats-io/nats-core/internal'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { requestCostPatched } from '../../services/common/bus/nats-request-cost.ts'
import { BusTimeoutError, NoRespondersError } from '../../services/common/errors.ts'
import { createTestNatsBus } from '../helpers/nats.ts'

interface Settled {
  deferred: { reject(err: unknown): void }
  resolver(err: Error | null, msg: unknown): void
}

/**
 * NATS.js rejects an answered request's settled promise with a fresh Error (its stack captured
 * each time, 10 % of a gateway's CPU on the NATS bridge path): nats-request-cost.ts stops that,
 * and every outcome of a request stays what it was. On the shared NATS server.
 */
describe('NATS requests', () => {
  const closers: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  async function bus(): Promise<Bus> {
    const b = await createTestNatsBus()
    closers.push(() => b.close())
    return b
  }

  it('answered, build no Error to reject a settled promise with', async () => {
    const b = await bus()
    expect(requestCostPatched()).toBe(true)
    await b.serve('echo', (msg) => msg.data)
    // Count what each request's promise is rejected with once it was answered.
    const proto = RequestOne.prototype as unknown as Settled
    const resolver = proto.resolver
    const rejected: number[] = []
    proto.resolver = function (this: Settled, err, msg) {
      let n = 0
      const reject = this.deferred.reject
      this.deferred.reject = (e) => (n++, reject(e))
      resolver.call(this, err, msg)
      queueMicrotask(() => rejected.push(n))
    }
    try {
      for (let i = 0; i < 50; i++) {
        const reply = await b.request('echo', new Uint8Array([i]))
        expect([...reply.data]).toEqual([i])
      }
    } finally {
      proto.resolver = resolver
    }
    expect(rejected).toHaveLength(50)
    expect(rejected.filter((n) => n > 0)).toEqual([]) // before: one Error each
  })

  it('unanswered, still fail as before: no responders, a timeout, the responder’s error', async () => {
    const b = await bus()
    await expect(b.request('nobody.here', new Uint8Array())).rejects.toBeInstanceOf(
      NoRespondersError
    )
    await b.serve('silent', () => new Promise<Uint8Array>(() => {}))
    await expect(b.request('silent', new Uint8Array(), { timeoutMs: 100 })).rejects.toBeInstanceOf(
      BusTimeoutError
    )
    await b.serve('fails', () => {
      throw new Error('no')
    })
    await expect(b.request('fails', new Uint8Array())).rejects.toThrow()
    // And answered ones after them still resolve.
    await b.serve('echo', (msg) => msg.data)
    expect([...(await b.request('echo', new Uint8Array([7]))).data]).toEqual([7])
  })
})
