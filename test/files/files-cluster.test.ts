import { jetstreamManager } from '@nats-io/jetstream'
import { connect as natsConnect } from '@nats-io/transport-node'
import { createHash, randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type Cluster } from '../../deploy/cluster.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { destroyBucketsWithPrefix, natsUrl, uniquePrefix } from '../helpers/nats.ts'

const MiB = 1_048_576
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

/** The streams of the shared NATS server whose names start with `start`. */
async function streamsStarting(start: string): Promise<string[]> {
  const nc = await natsConnect({ servers: natsUrl(), name: `files-cluster ${start}` })
  try {
    const jsm = await jetstreamManager(nc)
    const names: string[] = []
    for await (const info of jsm.streams.list())
      if (info.config.name.startsWith(start)) names.push(info.config.name)
    return names
  } finally {
    await nc.close()
  }
}

/**
 * Distributed: the files live in the bus's Object Store (`<busPrefix>_files`), so a file put
 * through one handshake replica is served, by range too, and deleted through the other.
 */
describe('files shared by two handshake replicas on NATS', () => {
  const prefix = uniquePrefix('filescluster')
  const adminToken = 'ubt_files_' + randomBytes(12).toString('hex')
  const operator = { authorization: `Bearer ${adminToken}` }
  let testDb: TestDb
  let cluster: Cluster
  let a: string
  let b: string

  beforeAll(async () => {
    testDb = await createTestDb('postgres', { migrate: false })
    cluster = await startCluster({
      natsUrl: natsUrl(),
      databaseUrl: testDb.databaseUrl!,
      busPrefix: prefix,
      adminToken,
      secretKey: randomBytes(32).toString('base64'),
      layout: { store: 1, gateway: 1, handshake: 2 },
      balancer: false,
    })
    ;[a, b] = cluster.of('handshake').map((m) => m.httpUrl) as [string, string]
    expect(a).not.toBe(b)
  }, 180_000)

  afterAll(async () => {
    await cluster?.close()
    await testDb?.close()
    const removed = await destroyBucketsWithPrefix(prefix)
    // The blob bucket is among what is removed, and nothing of the prefix is left.
    expect(removed).toContain(`OBJ_${prefix}_files`)
    expect(await streamsStarting(`OBJ_${prefix}_`)).toEqual([])
    expect(await streamsStarting(`KV_${prefix}_`)).toEqual([])
  }, 60_000)

  it('puts 5 MB through replica A, reads it byte for byte (and by range) through B, deletes through B', async () => {
    const content = randomBytes(5 * MiB)
    const path = '/te/v1/files/child01/firmware_update/fw-cluster.bin'
    const put = await fetch(a + path, { method: 'PUT', body: content, headers: operator })
    expect(put.status).toBe(201)
    const etag = `"${sha(content)}"`
    expect(put.headers.get('etag')).toBe(etag)
    // Stored in the bus's Object Store, not in A's data folder.
    expect(await streamsStarting(`OBJ_${prefix}_files`)).toEqual([`OBJ_${prefix}_files`])

    const head = await fetch(b + path, { method: 'HEAD', headers: operator })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe(String(content.length))
    expect(head.headers.get('etag')).toBe(etag)

    const whole = await fetch(b + path, { headers: operator })
    expect(whole.status).toBe(200)
    const got = Buffer.from(await whole.arrayBuffer())
    expect(got.length).toBe(content.length)
    expect(got.equals(content)).toBe(true)

    // Ranges across the Object Store's 128 KiB chunks, from the middle and from the end.
    for (const [range, start, end] of [
      [`bytes=${MiB - 7}-${2 * MiB + 12}`, MiB - 7, 2 * MiB + 12],
      ['bytes=131071-131072', 131_071, 131_072],
      [`bytes=${4 * MiB}-`, 4 * MiB, content.length - 1],
      ['bytes=-100', content.length - 100, content.length - 1],
    ] as const) {
      const part = await fetch(b + path, { headers: { ...operator, range, 'if-range': etag } })
      expect(part.status, range).toBe(206)
      expect(part.headers.get('content-range'), range).toBe(
        `bytes ${start}-${end}/${content.length}`
      )
      const bytes = Buffer.from(await part.arrayBuffer())
      expect(bytes.equals(content.subarray(start, end + 1)), range).toBe(true)
    }
    // A loopback client without credentials (the default `anonymous` policy) reads it through B too.
    const anonymous = await fetch(b + path, { headers: { range: 'bytes=0-15' } })
    expect(anonymous.status).toBe(206)
    expect(Buffer.from(await anonymous.arrayBuffer()).equals(content.subarray(0, 16))).toBe(true)

    const del = await fetch(b + path, { method: 'DELETE', headers: operator })
    expect(del.status).toBe(202)
    const gone = await fetch(a + path, { headers: operator })
    expect(gone.status).toBe(404)
    expect(await gone.json()).toMatchObject({ error: { code: 'not_found' } })
    expect((await fetch(b + path, { method: 'HEAD', headers: operator })).status).toBe(404)
  }, 60_000)

  it('replaces a file put through A with a later PUT through B: A serves the new version', async () => {
    const path = '/te/v1/files/child01/config_snapshot/cfg-1'
    const first = randomBytes(300 * 1_024)
    const second = randomBytes(200 * 1_024)
    expect((await fetch(a + path, { method: 'PUT', body: first, headers: operator })).status).toBe(
      201
    )
    expect((await fetch(b + path, { method: 'PUT', body: second, headers: operator })).status).toBe(
      201
    )
    const got = await fetch(a + path, { headers: operator })
    expect(got.status).toBe(200)
    expect(got.headers.get('etag')).toBe(`"${sha(second)}"`)
    expect(Buffer.from(await got.arrayBuffer()).equals(second)).toBe(true)
  })

  it('refuses through B a file under a file put through A (asked of the shared store, not a replica listing)', async () => {
    const parent = '/te/v1/files/cross/leaf'
    expect(
      (await fetch(a + parent, { method: 'PUT', body: 'leaf', headers: operator })).status
    ).toBe(201)
    const under = await fetch(b + parent + '/under', {
      method: 'PUT',
      body: 'x',
      headers: operator,
    })
    expect(under.status).toBe(409)
    expect(await under.json()).toMatchObject({ error: { code: 'conflict' } })
  })
})
