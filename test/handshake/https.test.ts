import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { selfSigned } from '../helpers/tls.ts'
import { startNode, type Node } from './fixture.ts'

/**
 * An upstream reached over a secure transport (mqtts://, wss://) is asked over https: the status
 * polls carry the downstream's secret, so they must not cross the network in the clear.
 */
describe('handshake over https', () => {
  let a: Node
  let b: Node
  let ca: string
  beforeAll(async () => {
    const pem = selfSigned()
    ca = pem.cert
    b = await startNode({ tls: pem })
    a = await startNode()
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
  })

  it('refuses an upstream server whose certificate it cannot trust, and says so', async () => {
    const res = await a.api('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtts://localhost', httpPort: Number(new URL(b.url).port) },
    })
    const up = (await res.json()) as any
    expect(res.status).toBe(201)
    expect(up).toMatchObject({ status: 'Pending', remoteRequestId: null })
    expect(up.lastError).toMatch(
      /^cannot reach https:\/\/localhost:\d+.*(self.signed|certificate)/i
    )
    expect(await b.call('/api/v1/requests')).toEqual([])
    await a.call(`/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
  })

  it('requests, is accepted and polls over https with the CA it was given', async () => {
    const up = await a.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtts://localhost', httpPort: Number(new URL(b.url).port), tls: { ca } },
    })
    expect(up).toMatchObject({ status: 'Pending', lastError: null })
    const [request] = await b.call('/api/v1/requests?status=Pending')
    expect(request).toMatchObject({ instanceId: a.instanceId, sourceIp: '127.0.0.1' })
    await b.call(`/api/v1/requests/${request.id}/accept`, { method: 'POST', json: {} })
    expect(await a.call(`/api/v1/upstreams/${up.id}/refresh`, { method: 'POST' })).toMatchObject({
      status: 'Approved',
      lastError: null,
    })
  })
})
