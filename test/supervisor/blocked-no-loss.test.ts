import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createBridgeLink } from '../../services/supervisor/bridge.ts'
import { collect, startAedes, waitFor, type TestBroker } from './aedes.ts'
import { linkOptions } from './link-options.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * The mesh blocks a link (ARCHITECTURE.md §9) while the gateway still holds messages for its
 * session and its window is full: those were queued for this link alone, so they must still go
 * upstream over it, not be acknowledged as unrouted and lost.
 */
describe('a link the spanning tree blocks', () => {
  it('loses no QoS 1 message queued or in flight when the block lands', async () => {
    const local = await startAedes()
    const remote = await startAedes()
    cleanups.push(
      () => local.close(),
      () => remote.close()
    )
    const open = () =>
      // A small window: most of the burst waits in the gateway when the block lands.
      createBridgeLink(linkOptions(local, remote, [{ source: 'plant1', target: 'acme/plant1' }], 8))
    let link = open()
    cleanups.push(() => link.stop())
    await waitFor(() => link.status().state === 'Forwarding', { what: 'Forwarding' })
    const sub = await collect(remote.url, 'acme/#')
    cleanups.push(() => sub.close())
    const pub = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => pub.endAsync(true))

    const N = 500
    await Promise.all(
      Array.from({ length: N }, (_, i) => pub.publishAsync('plant1/x', String(i), { qos: 1 }))
    )
    await link.setBlocked(true)
    await pub.publishAsync('plant1/x', 'after the block', { qos: 1 }) // the tree carries this one
    await new Promise((r) => setTimeout(r, 500))
    // Nothing was acknowledged and dropped: what had reached the link went upstream, the rest
    // stays in the session's queue on the gateway (live delivery of an unsubscribed filter ends).
    expect(link.status().unrouted).toBe(0)
    // The session's next resume (a reconnect, or the next owner) carries the rest over this link.
    await link.stop()
    link = open()
    cleanups.push(() => link.stop())
    await link.setBlocked(true)
    await waitFor(() => sub.got.length >= N, { what: `${N} messages upstream` })
    const seen = new Set(sub.got.map((m) => m.payload.toString()))
    for (let i = 0; i < N; i++) expect(seen.has(String(i))).toBe(true)
    expect(seen.has('after the block')).toBe(false)
    expect(link.status().unrouted).toBe(0)

    // Unblocked, it forwards again: once its session holds the binding's filter again (a link
    // that is reconnecting right then subscribes on connect; what is published before that was
    // the tree's to carry).
    await link.setBlocked(false)
    await waitFor(async () => (await subscribed(local, 'ubb-UP1')).includes('plant1/#'), {
      what: `the unblocked link's filter (link: ${JSON.stringify(link.status())})`,
    })
    await pub.publishAsync('plant1/x', 'unblocked', { qos: 1 })
    await waitFor(() => sub.got.some((m) => m.payload.toString() === 'unblocked'))
  })
})

/** The filters a client's session is subscribed to, as the broker keeps them. */
async function subscribed(broker: TestBroker, clientId: string): Promise<string[]> {
  // aedes' persistence is not in its public types; its subscriptionsByClient is a promise here.
  const { persistence } = broker.broker as unknown as {
    persistence: { subscriptionsByClient(c: { id: string }): Promise<Array<{ topic: string }>> }
  }
  const subs = await persistence.subscriptionsByClient({ id: clientId })
  return subs.map((s) => s.topic)
}
