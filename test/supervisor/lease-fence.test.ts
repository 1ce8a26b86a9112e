import { afterEach, describe, expect, it } from 'vitest'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { BUCKETS } from '../../services/contracts/buckets.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { collect, startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'
import { connectAsync } from 'mqtt'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A bus whose lease bucket's `update` (the renewal) can be made to hang, as on a stuck bus. */
function withStuckRenewals(bus: Bus) {
  const held: Array<() => void> = []
  const state = {
    stuck: false,
    /** Hang every renewal after the next one that lands; when that one landed. */
    stickAfterNext: false,
    lastLanded: 0,
    /** Let every held renewal through (to the real bucket), so the supervisor can close. */
    release() {
      state.stuck = false
      for (const go of held.splice(0)) go()
    },
  }
  const wrapped = Object.assign(Object.create(bus) as Bus, {
    async kv(bucket: string, options?: { ttlMs?: number }): Promise<KvBucket> {
      const kv = await bus.kv(bucket, options)
      if (bucket !== BUCKETS.leases) return kv
      return Object.assign(Object.create(kv) as KvBucket, {
        update: (key: string, value: Uint8Array, revision: number) =>
          state.stuck
            ? new Promise<number>((resolve, reject) =>
                held.push(() => kv.update(key, value, revision).then(resolve, reject))
              ) // answers only when released
            : kv.update(key, value, revision).then((rev) => {
                state.lastLanded = Date.now()
                if (state.stickAfterNext) state.stuck = true
                return rev
              }),
      })
    },
  })
  return { bus: wrapped, state }
}

describe('lease fence', () => {
  it('stops forwarding before the lease expires while a renewal hangs', async () => {
    const inner = createInProcessBus({ prefix: 't' })
    const { bus, state } = withStuckRenewals(inner)
    const local = await startAedes()
    const remote = await startAedes()
    const store = await startFakeStore(inner)
    cleanups.push(
      () => inner.close(),
      () => local.close(),
      () => remote.close(),
      () => store.close()
    )
    store.put({
      id: 'U1',
      brokerPort: remote.port,
      bindings: [{ source: 'plant1', target: 'acme/plant1' }],
    })
    const ttlMs = 1_500
    const sup = await startSupervisor(testContext(bus), {
      localBrokerUrl: local.url,
      leaseTtlMs: ttlMs,
      backoffBaseMs: 50,
    })
    cleanups.push(async () => {
      state.release()
      await sup.close()
    })
    await waitFor(() => sup.links().get('U1')?.state === 'Forwarding', { what: 'Forwarding' })
    const sub = await collect(remote.url, 'acme/#')
    cleanups.push(() => sub.close())
    const pub = await connectAsync(local.url, { clientId: 'plant' })
    cleanups.push(() => pub.endAsync())
    await pub.publishAsync('plant1/before', 'x', { qos: 1 })
    await waitFor(() => sub.got.some((m) => m.topic === 'acme/plant1/before'), {
      what: 'forwarded while the lease is held',
    })

    // From here every renewal hangs: the last one that succeeded was at most a tick ago.
    state.stickAfterNext = true
    await waitFor(() => state.stuck, { what: 'a renewal that lands, then hangs' })
    const expiresAt = state.lastLanded + ttlMs
    await waitFor(
      () => sup.links().get('U1') === undefined || sup.links().get('U1')?.state === 'Stopped',
      {
        what: 'the link fenced',
        timeoutMs: 3 * ttlMs,
      }
    )
    // The key expires `ttlMs` after the last renewal landed (sooner by the server's clock, which
    // started counting when the write arrived): the owner must have stopped well before that.
    expect(expiresAt - Date.now()).toBeGreaterThan(100)
    await pub.publishAsync('plant1/after', 'y', { qos: 1 })
    await new Promise((r) => setTimeout(r, 300))
    expect(sub.got.some((m) => m.topic === 'acme/plant1/after')).toBe(false)
  })
})
