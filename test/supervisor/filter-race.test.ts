import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createBridgeLink } from '../../services/supervisor/bridge.ts'
import { collect, startAedes, waitFor } from './aedes.ts'
import { linkOptions } from './link-options.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * A link's filters change (the mesh blocks it) while its connect step is still subscribing: the
 * two must not each act on what the other has not finished, or the link ends up subscribed while
 * it believes it is not, and carries a subtree the spanning tree gives to another edge.
 */
describe('a block that lands while the link is subscribing on connect', () => {
  it('leaves the link subscribed to nothing, and forwarding nothing new', async () => {
    let holdSubscribe: (() => void) | undefined
    const subscribing = new Promise<void>((seen) => {
      holdSubscribe = seen
    })
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const local = await startAedes({
      // The link's own SUBSCRIBE waits until the test has blocked the link.
      authorizeSubscribe: (client, sub, done) => {
        if (client?.id !== 'ubb-UP1' || sub.topic !== 'plant1/#') return done(null, sub)
        holdSubscribe?.()
        void released.then(() => done(null, sub))
      },
    })
    const remote = await startAedes()
    cleanups.push(
      () => local.close(),
      () => remote.close()
    )
    const link = createBridgeLink(
      linkOptions(local, remote, [{ source: 'plant1', target: 'acme/plant1' }], 8)
    )
    cleanups.push(() => link.stop())
    const sub = await collect(remote.url, 'acme/#')
    cleanups.push(() => sub.close())

    await subscribing
    const blocking = link.setBlocked(true)
    release()
    await blocking
    await waitFor(() => link.status().state === 'Forwarding', { what: 'Forwarding' })

    const pub = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => pub.endAsync(true))
    await pub.publishAsync('plant1/x', 'while blocked', { qos: 1 })
    await new Promise((r) => setTimeout(r, 300))
    expect(sub.got.map((m) => m.payload.toString())).toEqual([])

    // And unblocking still subscribes again.
    await link.setBlocked(false)
    await pub.publishAsync('plant1/x', 'unblocked', { qos: 1 })
    await waitFor(() => sub.got.some((m) => m.payload.toString() === 'unblocked'))
  })
})
