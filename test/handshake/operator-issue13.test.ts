import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/handshake/secret.ts'
import { startNode, type Node } from './fixture.ts'

/** What a new user of the operator API tripped over (issue 13), against one in-process instance. */
let n: Node

beforeAll(async () => {
  n = await startNode()
})
afterAll(async () => {
  await n?.close()
})

async function req(
  method: string,
  path: string,
  init: { json?: unknown; raw?: string; headers?: Record<string, string> } = {}
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { authorization: `Bearer ${n.token}`, ...init.headers }
  const body = init.json === undefined ? init.raw : JSON.stringify(init.json)
  if (init.json !== undefined) headers['content-type'] = 'application/json'
  const res = await n.app.request(path, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

const expectError = (a: { status: number; body: any }, status: number, code: string) =>
  expect({ status: a.status, code: a.body?.error?.code }, JSON.stringify(a.body)).toEqual({
    status,
    code,
  })

describe('an upstream pointing at this instance itself', () => {
  it('is refused with 400 self_upstream, leaving no upstream and no live request', async () => {
    const port = Number(new URL(n.url).port)
    const a = await req('POST', '/api/v1/upstreams', {
      json: { host: 'mqtt://127.0.0.1', brokerPort: 1883, httpPort: port },
    })
    expectError(a, 400, 'self_upstream')
    expect(a.body.error.message).toContain(n.instanceId)
    expect((await req('GET', '/api/v1/upstreams')).body).toEqual([])
    const requests = (await req('GET', '/api/v1/requests')).body as Array<{ status: string }>
    expect(requests.filter((r) => r.status === 'Pending')).toEqual([])
  })
})

describe('an empty body on a POST action', () => {
  const JSON_TYPE = { 'content-type': 'application/json' }
  const FORM_TYPE = { 'content-type': 'application/x-www-form-urlencoded' }
  let seq = 0
  /** A fresh Pending incoming request's id. */
  async function pending(): Promise<string> {
    const res = await n.api('/api/v1/handshake/requests', {
      method: 'POST',
      headers: { authorization: '', ...JSON_TYPE },
      body: JSON.stringify({ instanceId: `UB_empty${++seq}`, secretHash: sha256Hex(`s${seq}`) }),
    })
    expect(res.status).toBe(202)
    return ((await res.json()) as { requestId: string }).requestId
  }
  /** POST with `Content-Length: 0` (a JSON content type unless told), or with no body at all. */
  async function post(path: string, headers: Record<string, string> = JSON_TYPE, body = '') {
    const res = await n.api(path, { method: 'POST', headers, body })
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null }
  }

  it.each([
    ['a JSON content type and Content-Length: 0', JSON_TYPE, ''],
    ["curl -d '' (a form content type, no bytes)", FORM_TYPE, ''],
    ['no body and no content type', {}, null],
  ])('accepts with the default grants (%s)', async (_what, headers, body) => {
    const id = await pending()
    const a = await post(`/api/v1/requests/${id}/accept`, headers, body as string)
    expect(a, JSON.stringify(a.body)).toMatchObject({
      status: 200,
      body: { status: 'Accepted', grants: ['#'] },
    })
    await post(`/api/v1/requests/${id}/revoke`)
  })

  it('declines and revokes with an empty JSON body', async () => {
    const declined = await post(`/api/v1/requests/${await pending()}/decline`)
    expect(declined).toMatchObject({ status: 200, body: { status: 'Declined' } })
    const id = await pending()
    expect((await post(`/api/v1/requests/${id}/accept`)).status).toBe(200)
    expect(await post(`/api/v1/requests/${id}/revoke`)).toMatchObject({
      status: 200,
      body: { status: 'Revoked' },
    })
  })

  it('activates and refreshes an upstream with an empty JSON body', async () => {
    const up = await req('POST', '/api/v1/upstreams', {
      json: { kind: 'mqtt', host: 'mqtt://127.0.0.1', brokerPort: 1 },
    })
    await req('PUT', `/api/v1/upstreams/${up.body.id}/bindings`, {
      json: [{ source: 'a', target: 'b' }],
    })
    expect(await post(`/api/v1/upstreams/${up.body.id}/activate`)).toMatchObject({
      status: 200,
      body: { status: 'Active' },
    })
    expect((await post(`/api/v1/upstreams/${up.body.id}/refresh`)).status).toBe(200)
    expect((await post(`/api/v1/upstreams/${up.body.id}/deactivate`)).status).toBe(200)
    await req('DELETE', `/api/v1/upstreams/${up.body.id}`)
  })

  it('still refuses a body that is not JSON with 400 malformed_json', async () => {
    const res = await n.api(`/api/v1/requests/${await pending()}/accept`, {
      method: 'POST',
      headers: JSON_TYPE,
      body: '{"grants": ',
    })
    expect(res.status).toBe(400)
    expect(((await res.json()) as any).error.code).toBe('malformed_json')
  })
})

describe('replay?to= past the end of the log', () => {
  it('is 400 invalid_request naming the last seq; to= the last seq still replays', async () => {
    const up = await req('POST', '/api/v1/upstreams', {
      json: { kind: 'mqtt', host: 'mqtt://127.0.0.1', brokerPort: 1 },
    })
    const base = `/api/v1/upstreams/${up.body.id}`
    await req('PUT', `${base}/bindings`, { json: [{ source: 'a', target: 'b' }] })
    const log = await req('GET', `${base}/transitions`)
    const last = log.body.items.at(-1).seq as number
    const past = await req('GET', `${base}/replay?to=${last + 5}`)
    expectError(past, 400, 'invalid_request')
    expect(past.body.error.message).toContain(`last seq is ${last}`)
    expect(await req('GET', `${base}/replay?to=${last}`)).toMatchObject({
      status: 200,
      body: { to: last, verify: { ok: true } },
    })
    expect((await req('GET', `${base}/replay`)).body.to).toBe(last)
    await req('DELETE', base)
  })
})

describe('tls.ca, tls.cert and tls.key: PEM text or a file path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ub-tls-files-'))
  const CERT = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n'
  const KEY = '-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n'
  const write = (name: string, text: string) => {
    writeFileSync(join(dir, name), text)
    return join(dir, name)
  }
  const plain = (tls: Record<string, unknown>) =>
    req('POST', '/api/v1/upstreams', {
      json: { kind: 'mqtt', host: 'mqtts://127.0.0.1', brokerPort: 8883, tls },
    })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('reads a path at create time and keeps the PEM; PEM text stays as given', async () => {
    const a = await plain({ ca: write('ca.pem', CERT), cert: CERT, key: write('key.pem', KEY) })
    expect(a.status, JSON.stringify(a.body)).toBe(201)
    expect(a.body.tls).toEqual({ ca: CERT, cert: CERT })
    const stored = await n.store.call('upstream.get', { id: a.body.id })
    expect(stored.tls).toMatchObject({ ca: CERT, cert: CERT, key: KEY })
    await req('DELETE', `/api/v1/upstreams/${a.body.id}`)
  })

  it.each([
    ['ca', 'a path that does not exist', () => join(dir, 'missing.pem')],
    ['ca', 'a file without PEM', () => write('notes.txt', 'not a certificate')],
    ['ca', 'a private key file', () => write('ca-key.pem', KEY)],
    ['cert', 'a folder', () => dir],
    ['key', 'a certificate file', () => write('cert.pem', CERT)],
    ['ca', 'neither PEM nor a path', () => 'CA'],
  ])('refuses tls.%s naming %s: 400 naming the field', async (field, _what, value) => {
    const before = (await req('GET', '/api/v1/upstreams')).body.length
    const a = await plain({ [field]: value() })
    expectError(a, 400, 'invalid_request')
    expect(a.body.error.message).toContain(`tls.${field}`)
    expect(a.body.error.message).not.toContain('MIIEfake')
    expect((await req('GET', '/api/v1/upstreams')).body).toHaveLength(before)
  })
})
