import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRemoteClient, type RemoteTarget } from '../../services/contracts/handshake-client.ts'
import { sha256Hex } from '../../services/common/digest.ts'
import { discoverPeer } from '../../services/supervisor/peer.ts'
import { startNode, type Node } from '../handshake/fixture.ts'
import { selfSigned } from '../helpers/tls.ts'
import { startTlsSniffer, type TlsSniffer } from '../helpers/tls-sniffer.ts'
import { testKey } from '../supervisor/advert-keys.ts'

/**
 * Peer discovery and the mesh's topology exchange both carry the downstream's secret (the bridge's
 * MQTT password) as a bearer token. Against an upstream reached over mqtts:// they must go over
 * https like the status polls do: the upstream here serves its handshake API over https only,
 * behind a port that records anything that arrives in the clear.
 */
describe('the remote handshake client against an https-only upstream', () => {
  let upstream: Node
  let sniffer: TlsSniffer
  let target: RemoteTarget
  const secret = 'downstream-secret-' + Date.now()
  let requestId = ''
  const key = testKey() // the downstream's: adverts are believed only signed by their origin

  beforeAll(async () => {
    const pem = selfSigned()
    upstream = await startNode({ tls: pem })
    sniffer = await startTlsSniffer({ host: '127.0.0.1', port: Number(new URL(upstream.url).port) })
    target = { host: 'mqtts://localhost', httpPort: sniffer.port, tls: { ca: pem.cert } }
    const remote = createRemoteClient({ timeoutMs: 5_000 })
    const sent = await remote.sendRequest(target, {
      instanceId: 'UB_downTLS',
      secretHash: sha256Hex(secret),
      publicKey: key.publicKey,
    })
    requestId = sent.requestId
    await upstream.call(`/api/v1/requests/${requestId}/accept`, { method: 'POST', json: {} })
  })
  afterAll(async () => {
    await sniffer?.close()
    await upstream?.close()
  })

  it('learns the peer instance id over https', async () => {
    const peer = await discoverPeer(
      { kind: 'uns', ...target, tls: target.tls ?? null, remoteRequestId: requestId },
      secret,
      createRemoteClient({ timeoutMs: 5_000 })
    )
    expect(peer).toBe(upstream.instanceId)
  })

  it('exchanges topology over https and gets the merged database back', async () => {
    const mine = {
      adverts: [
        {
          ...key.sign({
            origin: 'UB_downTLS',
            version: Date.now(),
            neighbours: [upstream.instanceId],
            out: [upstream.instanceId],
            maxAgeMs: 60_000,
          }),
          ageMs: 0,
        },
      ],
    }
    const theirs = await createRemoteClient().exchangeTopology(target, requestId, secret, mine)
    expect(theirs.adverts.map((a) => a.origin)).toContain('UB_downTLS')
  })

  it('sent nothing in the clear: every connection was TLS, no secret crossed unencrypted', () => {
    expect(sniffer.tlsConnections()).toBeGreaterThanOrEqual(1)
    expect(sniffer.plaintext()).toBe('')
  })

  it('would have seen a plain-http request and its secret (the check can fail)', async () => {
    const probe = await startTlsSniffer({ host: '127.0.0.1', port: 1 })
    try {
      await fetch(`http://127.0.0.1:${probe.port}/api/v1/handshake/requests/x`, {
        headers: { authorization: `Bearer ${secret}` },
      }).catch(() => undefined)
      expect(probe.plaintext()).toContain(`Bearer ${secret}`)
    } finally {
      await probe.close()
    }
  })
})
