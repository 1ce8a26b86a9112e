import { connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { readSse, startNode, waitFor, type Node } from './fixture.ts'

/**
 * An SSE client whose socket does not drain (issue 10): its queue is bounded by `sseQueueMax`,
 * it is dropped and counted, and the other clients still get every event.
 */
describe('server-sent events: a client that stops reading', () => {
  let n: Node | undefined
  let stuck: Socket | undefined
  afterEach(async () => {
    stuck?.destroy()
    await n?.close()
  })

  const metric = async (name: string) => {
    const line = (await n!.metrics.metrics()).split('\n').find((l) => l.startsWith(name + ' '))
    return line ? Number(line.split(' ')[1]) : 0
  }
  // 1,000 bindings: each transition is ~100 KB on the stream, so socket buffers fill fast.
  const bindings = (tag: string) =>
    Array.from({ length: 1_000 }, (_, i) => ({ source: `s/${i}`, target: `${tag}/${i}` }))

  it('drops it past sseQueueMax, keeps memory bounded, and the others get everything', async () => {
    const queueMax = 20
    n = await startNode({ sseQueueMax: queueMax, ssePingMs: 60_000 })
    const up = await n.call('/api/v1/upstreams', {
      method: 'POST',
      json: { kind: 'mqtt', host: 'mqtt://127.0.0.1' },
    })
    const total = 150
    const baseline = n.liveSubscriptions()

    // A raw client that sends the GET and never reads a byte.
    const { port } = new URL(n.url)
    stuck = connect(Number(port), '127.0.0.1')
    await new Promise((resolve) => stuck!.once('connect', resolve))
    stuck.write(
      `GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${n.token}\r\n\r\n`
    )
    let closed = false
    stuck.once('close', () => (closed = true))
    await waitFor(() => n!.liveSubscriptions() > baseline)

    // A client that reads.
    const reading = readSse(n.url + '/api/v1/events', {
      token: n.token,
      until: (e) => e.filter((x) => x.event === 'transition').length >= total,
      timeoutMs: 60_000,
    })
    await waitFor(() => n!.liveSubscriptions() > baseline + 1)

    let maxQueued = 0
    const sampler = setInterval(() => {
      void metric('ub_sse_queued_events').then((q) => (maxQueued = Math.max(maxQueued, q)))
    }, 10)
    for (let i = 0; i < total; i++) {
      await n.call(`/api/v1/upstreams/${up.id}/bindings`, {
        method: 'PUT',
        json: bindings(i % 2 ? 'odd' : 'even'),
      })
    }
    const got = (await reading).filter((e) => e.event === 'transition')
    clearInterval(sampler)

    expect(got.length).toBe(total)
    const ids = got.map((e) => Number(e.id))
    expect(ids).toEqual(ids.map((_, i) => ids[0]! + i)) // every one, in order
    expect(await metric('ub_sse_clients_dropped_total')).toBe(1)
    // Two clients, each holding at most queueMax events.
    expect(maxQueued).toBeLessThanOrEqual(2 * queueMax)
    // The stuck client let go of its subscription and its socket is cut.
    await waitFor(() => n!.liveSubscriptions() === baseline, { timeoutMs: 10_000 })
    expect(await metric('ub_sse_clients')).toBe(0)
    stuck.resume() // read what the kernel holds, then see the end the server sent
    await waitFor(() => closed, { timeoutMs: 10_000 })
  }, 90_000)
})
