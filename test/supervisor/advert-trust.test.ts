import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/common/digest.ts'
import { instanceKey } from '../../services/common/instance-key.ts'
import type { Advert } from '../../services/common/topology.ts'
import { createRemoteClient, type RemoteTarget } from '../../services/contracts/handshake-client.ts'
import { startNode, type Node } from '../handshake/fixture.ts'
import { testKey, type TestKey } from './advert-keys.ts'

/**
 * Only an origin can speak for itself (ARCHITECTURE.md §9): an accepted downstream posts adverts
 * to a real upstream server's topology route; forged ones are ignored and counted on /metrics,
 * real ones (its own, and a third instance's vouched for by its signed advert) are merged.
 */
describe('signed topology adverts on the upstream server', () => {
  let upstream: Node
  let target: RemoteTarget
  let requestId = ''
  const secret = 'downstream-secret-' + Date.now()
  const DOWN = 'UB_down001'
  const THIRD = 'UB_third01'
  const down: TestKey = testKey()
  const third: TestKey = testKey()
  const remote = createRemoteClient({ timeoutMs: 5_000 })

  const advert = (origin: string, over: Partial<Advert> = {}): Advert => ({
    origin,
    version: Date.now(),
    neighbours: [],
    out: [],
    maxAgeMs: 60_000,
    ...over,
  })
  const post = (...ads: Advert[]) =>
    remote.exchangeTopology(target, requestId, secret, {
      adverts: ads.map((a) => ({ ...a, ageMs: 0 })),
    })
  async function rejected(): Promise<Record<string, number>> {
    const text = await (await upstream.api('/metrics')).text()
    const out: Record<string, number> = {}
    for (const m of text.matchAll(/^ub_topology_adverts_rejected_total\{reason="(\w+)"\} (\d+)/gm))
      out[m[1]!] = Number(m[2])
    return out
  }

  beforeAll(async () => {
    upstream = await startNode()
    target = { host: 'mqtt://127.0.0.1', httpPort: Number(new URL(upstream.url).port) }
    const sent = await remote.sendRequest(target, {
      instanceId: DOWN,
      secretHash: sha256Hex(secret),
      publicKey: down.publicKey,
    })
    requestId = sent.requestId
    expect(sent.publicKey).toBe((await instanceKey(upstream.bus)).publicKey)
    await upstream.call(`/api/v1/requests/${requestId}/accept`, { method: 'POST', json: {} })
  })
  afterAll(async () => {
    await upstream?.close()
  })

  it('takes a real advert, signed by its origin with the key its request carried', async () => {
    const theirs = await post(down.sign(advert(DOWN, { neighbours: [upstream.instanceId] })))
    expect(theirs.adverts.map((a) => a.origin)).toContain(DOWN)
  })

  it('ignores and counts forgeries: wrong key, another origin, the receiver, absurd versions', async () => {
    const before = await rejected()
    const forger = testKey()
    const theirs = await post(
      // The downstream's origin under another key.
      forger.sign(advert(DOWN, { version: Date.now() + 1, neighbours: ['UB_evil001'] })),
      // Unsigned.
      advert(DOWN, { version: Date.now() + 2, neighbours: ['UB_evil002'] }),
      // Another origin nobody vouches for, signed by the downstream.
      down.sign(advert('UB_nobody1')),
      // The receiver itself, signed by the downstream and by a stranger.
      down.sign(advert(upstream.instanceId, { version: 2 ** 53 - 1 })),
      forger.sign(advert(upstream.instanceId)),
      // The downstream's own key, but a version a day ahead of the clock: would block it for a day.
      down.sign(advert(DOWN, { version: Date.now() + 86_400_000, neighbours: ['UB_evil003'] })),
      // And one older than its lifetime allows (a replay).
      down.sign(advert(DOWN, { version: Date.now() - 3_600_000, neighbours: ['UB_evil004'] }))
    )
    const mine = theirs.adverts.find((a) => a.origin === DOWN)
    expect(mine?.neighbours).toEqual([upstream.instanceId]) // the real one still stands
    expect(theirs.adverts.map((a) => a.origin)).not.toContain('UB_nobody1')
    const own = theirs.adverts.find((a) => a.origin === upstream.instanceId)
    expect(own === undefined || own.version < 2 ** 53 - 1).toBe(true)
    const after = await rejected()
    const delta = (r: string) => (after[r] ?? 0) - (before[r] ?? 0)
    expect(delta('bad_signature')).toBe(1)
    expect(delta('unsigned')).toBe(1)
    expect(delta('unknown_origin')).toBe(1)
    expect(delta('self')).toBe(2)
    expect(delta('version')).toBe(2)
  })

  it("takes a third instance's advert relayed with a key the downstream's signed advert vouches for", async () => {
    const vouching = down.sign(
      advert(DOWN, {
        version: Date.now() + 10,
        neighbours: [THIRD, upstream.instanceId],
        keys: { [THIRD]: third.publicKey },
      })
    )
    const before = await rejected()
    const theirs = await post(
      third.sign(advert(THIRD, { neighbours: [DOWN] })),
      vouching,
      // A forger that relays a third instance's advert under its own key gets nowhere.
      testKey().sign(advert(THIRD, { version: Date.now() + 20, neighbours: ['UB_evil005'] }))
    )
    const got = theirs.adverts.find((a) => a.origin === THIRD)
    expect(got?.neighbours).toEqual([DOWN])
    const after = await rejected()
    expect((after.bad_signature ?? 0) - (before.bad_signature ?? 0)).toBe(1)
  })
})
