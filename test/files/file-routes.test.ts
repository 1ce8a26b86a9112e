import { createHash, randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/common/digest.ts'
import { apiRequest, startInstance, type Instance } from '../helpers/instance.ts'

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex')
const digestHeader = (b: Uint8Array | string) =>
  `sha-256=:${createHash('sha256').update(b).digest('base64')}:`

/** A raw request, path sent as given (fetch would normalize `..` and `%2e`). */
function raw(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer
): Promise<{
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        })
      )
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('file transfer routes on a real instance', () => {
  let inst: Instance
  const files = (path: string) => `${inst.httpUrl}/te/v1/files/${path}`
  beforeAll(async () => {
    inst = await startInstance({
      args: [
        ...['--files-max-file-bytes', '4096'],
        ...['--files-quotas', JSON.stringify({ 'quota/ns': 3000 })],
        ...['--files-max-ttl-ms', '3600000'],
      ],
    })
  }, 60_000)
  afterAll(async () => {
    await inst?.stop()
  })

  const expectError = async (res: Response, status: number, code: string) => {
    expect(res.status).toBe(status)
    expect(res.headers.get('content-type')).toMatch(/application\/json/)
    expect(await res.json()).toMatchObject({ error: { code } })
  }

  it('serves ranges, HEAD, ETag and conditional requests for a resumed download', async () => {
    const content = randomBytes(3000)
    const put = await fetch(files('child01/firmware_update/fw.bin'), {
      method: 'PUT',
      body: content,
    })
    expect(put.status).toBe(201)
    const etag = `"${sha(content)}"`
    expect(put.headers.get('etag')).toBe(etag)

    const head = await fetch(files('child01/firmware_update/fw.bin'), { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe('3000')
    expect(head.headers.get('accept-ranges')).toBe('bytes')
    expect(head.headers.get('etag')).toBe(etag)

    // Cut after 1,000 bytes, resumed from there.
    const rest = await fetch(files('child01/firmware_update/fw.bin'), {
      headers: { range: 'bytes=1000-', 'if-range': etag },
    })
    expect(rest.status).toBe(206)
    expect(rest.headers.get('content-range')).toBe('bytes 1000-2999/3000')
    const resumed = Buffer.concat([
      content.subarray(0, 1000),
      Buffer.from(await rest.arrayBuffer()),
    ])
    expect(resumed.equals(content)).toBe(true)

    const middle = await fetch(files('child01/firmware_update/fw.bin'), {
      headers: { range: 'bytes=10-19' },
    })
    expect(Buffer.from(await middle.arrayBuffer()).equals(content.subarray(10, 20))).toBe(true)
    const suffix = await fetch(files('child01/firmware_update/fw.bin'), {
      headers: { range: 'bytes=-5' },
    })
    expect(Buffer.from(await suffix.arrayBuffer()).equals(content.subarray(2995))).toBe(true)
    // The file changed since the first part: If-Range gives the whole new file.
    const stale = await fetch(files('child01/firmware_update/fw.bin'), {
      headers: { range: 'bytes=1000-', 'if-range': `"${sha('other')}"` },
    })
    expect(stale.status).toBe(200)
    expect(Buffer.from(await stale.arrayBuffer()).equals(content)).toBe(true)

    const unchanged = await fetch(files('child01/firmware_update/fw.bin'), {
      headers: { 'if-none-match': etag },
    })
    expect(unchanged.status).toBe(304)
    const past = await fetch(files('child01/firmware_update/fw.bin'), {
      headers: { range: 'bytes=3000-' },
    })
    expect(past.headers.get('content-range')).toBe('bytes */3000')
    await expectError(past, 416, 'range_not_satisfiable')
  })

  it('checks an upload against its Content-Digest and If-Match / If-None-Match', async () => {
    const good = await fetch(files('digest/a.txt'), {
      method: 'PUT',
      body: 'hello',
      headers: { 'content-digest': digestHeader('hello') },
    })
    expect(good.status).toBe(201)
    await expectError(
      await fetch(files('digest/a.txt'), {
        method: 'PUT',
        body: 'hellO',
        headers: { 'content-digest': digestHeader('hello') },
      }),
      400,
      'digest_mismatch'
    )
    expect(await (await fetch(files('digest/a.txt'))).text()).toBe('hello') // kept
    await expectError(
      await fetch(files('digest/a.txt'), {
        method: 'PUT',
        body: 'x',
        headers: { 'content-digest': 'sha-256=:AAAA:' },
      }),
      400,
      'invalid_digest'
    )
    await expectError(
      await fetch(files('digest/a.txt'), {
        method: 'PUT',
        body: 'next',
        headers: { 'if-match': `"${sha('not the stored one')}"` },
      }),
      412,
      'precondition_failed'
    )
    const replaced = await fetch(files('digest/a.txt'), {
      method: 'PUT',
      body: 'next',
      headers: { 'if-match': `"${sha('hello')}"` },
    })
    expect(replaced.status).toBe(201)
    await expectError(
      await fetch(files('digest/a.txt'), {
        method: 'PUT',
        body: 'again',
        headers: { 'if-none-match': '*' },
      }),
      412,
      'precondition_failed'
    )
  })

  it('refuses a file past the size bound with 413 and a namespace past its quota with 507, keeping nothing', async () => {
    await expectError(
      await fetch(files('big/one.bin'), { method: 'PUT', body: randomBytes(5000) }),
      413,
      'too_large'
    )
    // Without Content-Length (chunked): refused while streaming.
    const chunked = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 5; i++) c.enqueue(randomBytes(1000))
        c.close()
      },
    })
    await expectError(
      await fetch(files('big/two.bin'), {
        method: 'PUT',
        body: chunked,
        duplex: 'half',
      } as RequestInit),
      413,
      'too_large'
    )
    expect((await fetch(files('big/two.bin'))).status).toBe(404)
    // Refused while the client is still sending, again and again: each client reads its 413
    // (the rest of its body is drained, not reset) and the process stays up (a write pending
    // on the refused file once ended it).
    for (let i = 0; i < 30; i++) {
      const more = new ReadableStream<Uint8Array>({
        start(c) {
          for (let j = 0; j < 50; j++) c.enqueue(randomBytes(1000))
          c.close()
        },
      })
      const res = await fetch(files('big/three.bin'), {
        method: 'PUT',
        body: more,
        duplex: 'half',
      } as RequestInit)
      expect(res.status).toBe(413)
      await res.body?.cancel()
    }
    expect((await fetch(`${inst.httpUrl}/healthz`)).status).toBe(200)
    expect(
      (await fetch(files('quota/ns/a.bin'), { method: 'PUT', body: randomBytes(2000) })).status
    ).toBe(201)
    await expectError(
      await fetch(files('quota/ns/b.bin'), { method: 'PUT', body: randomBytes(2000) }),
      507,
      'quota'
    )
    // Replacing a file frees its old bytes.
    expect(
      (await fetch(files('quota/ns/a.bin'), { method: 'PUT', body: randomBytes(2500) })).status
    ).toBe(201)
    expect(
      (await fetch(files('quota/elsewhere.bin'), { method: 'PUT', body: randomBytes(2000) })).status
    ).toBe(201)
  })

  it('answers every bad path and method with a 4xx JSON error', async () => {
    const cases: Array<[string, string, number, string]> = [
      // The URL is resolved first (WHATWG): `..` and `%2e%2e` never reach a file route with
      // a level that escapes; what they resolve to outside /te/v1/files is an operator route.
      ['GET', '/te/v1/files/a/../../../etc/passwd', 401, 'unauthorized'],
      ['GET', '/te/v1/files/a/%2e%2e/%2e%2e/x', 401, 'unauthorized'],
      ['GET', '/te/v1/files/a/%2e%2e', 400, 'is_directory'],
      ['PUT', '/te/v1/files/a%2Fb', 400, 'invalid_path'],
      ['GET', '/te/v1/files/%FF%FE', 400, 'invalid_path'],
      ['GET', '/te/v1/files/a%00b', 400, 'invalid_path'],
      ['PUT', '/te/v1/files/dir/', 400, 'is_directory'],
      ['GET', '/te/v1/files/', 400, 'is_directory'],
      ['PUT', '/te/v1/files/a//b', 400, 'invalid_path'],
      ['PUT', '/te/v1/files/a/+/b', 400, 'invalid_path'],
      ['PUT', '/te/v1/files/a/%23', 400, 'invalid_path'],
      ['POST', '/te/v1/files/a', 405, 'method_not_allowed'],
    ]
    for (const [method, path, status, code] of cases) {
      const body = method === 'GET' ? undefined : Buffer.from('x')
      const res = await raw(inst.httpUrl, method, path, {}, body)
      expect({ method, path, status: res.status }).toEqual({ method, path, status })
      expect(res.headers['content-type']).toMatch(/application\/json/)
      if (code) expect(JSON.parse(res.body)).toMatchObject({ error: { code } })
    }
    // A directory: a file under it exists, so it is neither a file to get, put, nor delete.
    expect((await fetch(files('tree/leaf.txt'), { method: 'PUT', body: 'leaf' })).status).toBe(201)
    await expectError(await fetch(files('tree'), { method: 'PUT', body: 'x' }), 409, 'conflict')
    await expectError(await fetch(files('tree'), { method: 'DELETE' }), 409, 'conflict')
    await expectError(await fetch(files('tree'), {}), 404, 'not_found')
    await expectError(
      await fetch(files('tree/leaf.txt/under'), { method: 'PUT', body: 'x' }),
      409,
      'conflict'
    )
    await expectError(
      await fetch(files('ttl/x'), { method: 'PUT', body: 'x', headers: { 'ub-ttl': 'soon' } }),
      400,
      'invalid_ttl'
    )
    await expectError(
      await fetch(files('ttl/x'), { method: 'PUT', body: 'x', headers: { 'ub-ttl': '7200' } }),
      400,
      'invalid_ttl'
    )
  })

  it('lets a downstream bridge read and write only inside its grants, and the operator everywhere', async () => {
    const secret = 'a-downstream-secret-' + randomBytes(8).toString('hex')
    const sent = await fetch(`${inst.httpUrl}/api/v1/handshake/requests`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ instanceId: 'UB_files_dn', secretHash: sha256Hex(secret) }),
    })
    const { requestId } = (await sent.json()) as { requestId: string }
    const basic = (user: string, password: string) => ({
      authorization: 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64'),
    })
    // Pending: the secret opens nothing yet.
    await expectError(
      await fetch(files('acme/site1/fw.bin'), { headers: basic('UB_files_dn', secret) }),
      401,
      'unauthorized'
    )
    const accepted = await apiRequest(inst, 'POST', `/api/v1/requests/${requestId}/accept`, {
      grants: ['acme/site1'],
    })
    expect(accepted.status).toBe(200)
    const mine = await fetch(files('acme/site1/fw.bin'), {
      method: 'PUT',
      body: 'firmware',
      headers: basic('UB_files_dn', secret),
    })
    expect(mine.status).toBe(201)
    expect(
      await (
        await fetch(files('acme/site1/fw.bin'), { headers: basic('UB_files_dn', secret) })
      ).text()
    ).toBe('firmware')
    await expectError(
      await fetch(files('acme/site2/fw.bin'), {
        method: 'PUT',
        body: 'x',
        headers: basic('UB_files_dn', secret),
      }),
      403,
      'forbidden'
    )
    expect((await fetch(files('acme/other.bin'), { method: 'PUT', body: 'theirs' })).status).toBe(
      201
    )
    await expectError(
      await fetch(files('acme/other.bin'), { headers: basic('UB_files_dn', secret) }),
      403,
      'forbidden'
    )
    await expectError(
      await fetch(files('acme/site1/fw.bin'), { headers: basic('UB_files_dn', 'wrong') }),
      401,
      'unauthorized'
    )
    const operator = { authorization: `Bearer ${inst.adminToken}` }
    expect((await fetch(files('acme/site1/fw.bin'), { headers: operator })).status).toBe(200)
    await expectError(
      await fetch(files('acme/site1/fw.bin'), {
        headers: { authorization: 'Bearer wrong-token-123' },
      }),
      401,
      'unauthorized'
    )
    // Revoked: refused at once (the grant change drops every cached answer).
    expect((await apiRequest(inst, 'POST', `/api/v1/requests/${requestId}/revoke`)).status).toBe(
      200
    )
    await expectError(
      await fetch(files('acme/site1/fw.bin'), { headers: basic('UB_files_dn', secret) }),
      401,
      'unauthorized'
    )
  })

  it('counts transfers and refusals on /metrics', async () => {
    const text = await (
      await fetch(`${inst.httpUrl}/metrics`, {
        headers: { authorization: `Bearer ${inst.adminToken}` },
      })
    ).text()
    expect(Number(/^ub_files_stored_total (\d+)/m.exec(text)?.[1])).toBeGreaterThan(5)
    expect(Number(/^ub_files_received_bytes_total (\d+)/m.exec(text)?.[1])).toBeGreaterThan(3000)
    expect(text).toMatch(/^ub_files_refused_total\{reason="too_large"\} 32$/m)
    expect(text).toMatch(/^ub_files_refused_total\{reason="forbidden"\} [1-9]/m)
    expect(text).toMatch(/^ub_files_transfers_in_progress\{direction="in"\} 0$/m)
  })
})
