import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/common/digest.ts'
import { createRemoteClient, type RemoteTarget } from '../../services/contracts/handshake-client.ts'
import { createStoreClient } from '../../services/store/index.ts'
import { testKey } from '../supervisor/advert-keys.ts'
import { startNode, type Node } from '../handshake/fixture.ts'

/**
 * A downstream's thin-edge.io mounts reach the upstream in its topology exchange: the upstream
 * server keeps only those inside the request's grants, well formed, and counts the rest; a
 * caller without the request's secret declares nothing.
 */
describe('thin-edge.io mounts over the topology exchange', () => {
  let upstream: Node
  let target: RemoteTarget
  let requestId = ''
  const secret = 'mount-secret-' + Date.now()
  const DOWN = 'UB_mount01'
  const remote = createRemoteClient({ timeoutMs: 5_000 })
  const mounts = async () =>
    (await createStoreClient({ bus: upstream.bus }).call('te.mount.list', {})).items
  async function refusedTotal(): Promise<number> {
    const text = await (await upstream.api('/metrics')).text()
    return Number(/^ub_te_mounts_refused_total (\d+)/m.exec(text)?.[1] ?? 0)
  }
  const exchange = (teMounts: unknown[], bearer = secret) =>
    remote.exchangeTopology(target, requestId, bearer, { adverts: [], teMounts })

  beforeAll(async () => {
    upstream = await startNode()
    target = { host: 'mqtt://127.0.0.1', httpPort: Number(new URL(upstream.url).port) }
    const sent = await remote.sendRequest(target, {
      instanceId: DOWN,
      secretHash: sha256Hex(secret),
      publicKey: testKey().publicKey,
    })
    requestId = sent.requestId
    await upstream.call(`/api/v1/requests/${requestId}/accept`, {
      method: 'POST',
      json: { grants: ['acme/site1'] },
    })
  })
  afterAll(async () => {
    await upstream?.close()
  })

  it('keeps the mounts inside the grants and counts the others', async () => {
    await expect(exchange([{ target: 'acme/site1/te', path: '' }], 'wrong')).rejects.toMatchObject({
      status: 401,
    })
    expect(await mounts()).toEqual([])
    const before = await refusedTotal()
    await exchange([
      { target: 'acme/site1/te', path: '' },
      { target: 'acme/site2/te', path: '' }, // another site: not granted
      { target: 'acme/site1/+', path: '' }, // malformed
    ])
    expect(await mounts()).toEqual([
      { instanceId: DOWN, requestId, mounts: [{ target: 'acme/site1/te', path: '' }] },
    ])
    expect((await refusedTotal()) - before).toBe(2)
    // Declared again unchanged: nothing counted twice. Declared empty: the mount goes.
    await exchange([
      { target: 'acme/site1/te', path: '' },
      { target: 'acme/site2/te', path: '' },
      { target: 'acme/site1/+', path: '' },
    ])
    expect((await refusedTotal()) - before).toBe(2)
    await exchange([])
    expect(await mounts()).toEqual([])
  })
})
