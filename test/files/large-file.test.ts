import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startInstance, type Instance } from '../helpers/instance.ts'

const MiB = 1_048_576
const SIZE = 200 * MiB

/** The process's resident memory, from /proc (the instance is another process). */
const rssOf = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1_024

/** A deterministic 200 MB body made as it is read: the test holds none of it at once. */
function* content(): Generator<Buffer> {
  const block = Buffer.alloc(MiB)
  for (let i = 0; i < SIZE / MiB; i++) {
    block.fill(i % 251)
    block.writeUInt32BE(i, 0)
    yield block
  }
}

describe('a 200 MB file through the file transfer service', () => {
  let inst: Instance
  let sampler: NodeJS.Timeout | undefined
  const samples: number[] = []
  beforeAll(async () => {
    inst = await startInstance({ args: ['--files-max-file-bytes', String(SIZE)] })
  }, 60_000)
  afterAll(async () => {
    clearInterval(sampler)
    await inst?.stop()
  })

  it('is put and got back byte for byte with the process memory flat, and a cut download resumes with Range', async () => {
    const pid = inst.process.child.pid!
    // Idle: the lowest of a second's samples (a start-up collection may still be running).
    const idle: number[] = []
    for (let i = 0; i < 20; i++) {
      idle.push(rssOf(pid))
      await new Promise((r) => setTimeout(r, 50))
    }
    const base = Math.min(...idle)
    sampler = setInterval(() => samples.push(rssOf(pid)), 50)
    const url = `${inst.httpUrl}/te/v1/files/child01/firmware_update/big.bin`
    const sent = createHash('sha256')
    const body = new ReadableStream<Uint8Array>({
      start() {},
      pull: (() => {
        const it = content()
        return (c: ReadableStreamDefaultController<Uint8Array>) => {
          const next = it.next()
          if (next.done) return c.close()
          sent.update(next.value)
          c.enqueue(new Uint8Array(next.value))
        }
      })(),
    })
    const put = await fetch(url, { method: 'PUT', body, duplex: 'half' } as RequestInit)
    expect(put.status).toBe(201)
    const sha = sent.digest('hex')
    expect(put.headers.get('etag')).toBe(`"${sha}"`)

    // Cut after ~80 MB: the client goes away mid-body.
    const cutAt = await new Promise<number>((resolve, reject) => {
      let got = 0
      const req = httpRequest(url, (res) => {
        res.on('data', (chunk: Buffer) => {
          got += chunk.length
          if (got >= 80 * MiB) {
            req.destroy()
            resolve(got)
          }
        })
      })
      req.on('error', (err) => (got >= 80 * MiB ? undefined : reject(err)))
      req.end()
    })
    expect(cutAt).toBeGreaterThanOrEqual(80 * MiB)

    // Download: the first part again (as a client that kept it would), then the rest by Range.
    const received = createHash('sha256')
    let size = 0
    const first = await fetch(url, { headers: { range: `bytes=0-${cutAt - 1}` } })
    expect(first.status).toBe(206)
    for await (const chunk of first.body!) {
      received.update(chunk)
      size += chunk.length
    }
    const rest = await fetch(url, { headers: { range: `bytes=${cutAt}-`, 'if-range': `"${sha}"` } })
    expect(rest.status).toBe(206)
    expect(rest.headers.get('content-range')).toBe(`bytes ${cutAt}-${SIZE - 1}/${SIZE}`)
    for await (const chunk of rest.body!) {
      received.update(chunk)
      size += chunk.length
    }
    expect(size).toBe(SIZE)
    expect(received.digest('hex')).toBe(sha)

    clearInterval(sampler)
    const peak = Math.max(...samples)
    // Flat: the growth over the idle process is a small part of the file's size.
    console.log(
      `large file: rss idle ${(base / MiB).toFixed(0)} MiB, peak ${(peak / MiB).toFixed(0)} MiB over ${samples.length} samples`
    )
    expect(peak - base).toBeLessThan(64 * MiB)
  }, 240_000)
})
