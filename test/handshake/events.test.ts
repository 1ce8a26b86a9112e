import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { readSse, startNode, waitFor, type Node, type SseEvent } from './fixture.ts'

/** GET /api/v1/events over a real socket: live, resumable, pinging, and letting go on disconnect. */
describe('server-sent events', () => {
  let n: Node
  beforeEach(async () => {
    n = await startNode({ ssePingMs: 100 })
  })
  afterEach(async () => {
    await n?.close()
  })

  const transitions = (events: SseEvent[]) => events.filter((e) => e.event === 'transition')

  async function makeUpstream(): Promise<string> {
    const up = await n.call('/api/v1/upstreams', {
      method: 'POST',
      json: { kind: 'mqtt', host: 'mqtt://127.0.0.1' },
    })
    await n.call(`/api/v1/upstreams/${up.id}/bindings`, {
      method: 'PUT',
      json: [{ source: 'a', target: 'b' }],
    })
    await n.call(`/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })
    return up.id
  }

  it('streams every transition live with the log fields and the global seq as id', async () => {
    const baseline = n.liveSubscriptions()
    const reading = readSse(n.url + '/api/v1/events', {
      token: n.token,
      until: (e) => transitions(e).length >= 3,
    })
    await waitFor(() => n.liveSubscriptions() > baseline)
    const id = await makeUpstream()
    const got = transitions(await reading)
    const rows = got.map((e) => JSON.parse(e.data))
    expect(rows.map((r) => [r.machine, r.machineId, r.event.type, r.from, r.to])).toEqual([
      ['upstream', id, expect.any(String), null, 'Approved'],
      ['upstream', id, 'upstream.bindings.set', 'Approved', 'Approved'],
      ['upstream', id, 'upstream.activate', 'Approved', 'Active'],
    ])
    const log = await n.call(`/api/v1/upstreams/${id}/transitions`)
    expect(rows).toEqual(
      log.items.map(({ verified, ...r }: any, i: number) => {
        expect(verified).toBe(true)
        return { ...r, globalSeq: rows[i].globalSeq }
      })
    )
    const ids = got.map((e) => Number(e.id))
    expect(ids).toEqual(rows.map((r) => r.globalSeq))
    expect(ids[1]).toBe(ids[0]! + 1)
    expect(ids[2]).toBe(ids[1]! + 1)
  })

  it('resumes after Last-Event-ID from the log, then goes live, without duplicates', async () => {
    await makeUpstream()
    const all = transitions(
      await readSse(n.url + '/api/v1/events', {
        token: n.token,
        lastEventId: '0',
        until: (e) => transitions(e).length >= 3,
      })
    )
    const first = all[0]!.id!
    const reading = readSse(n.url + '/api/v1/events', {
      token: n.token,
      lastEventId: first,
      until: (e) => transitions(e).length >= 5,
    })
    // Two replayed from the log, then three more live.
    await waitFor(() => n.liveSubscriptions() > 1)
    await makeUpstream()
    const resumed = transitions(await reading).map((e) => Number(e.id))
    expect(resumed).toEqual([1, 2, 3, 4, 5].map((k) => Number(first) + k))
  })

  it('accepts ?after= as the resume point for clients that cannot set headers', async () => {
    await makeUpstream()
    const got = transitions(
      await readSse(n.url + '/api/v1/events?after=1', {
        token: n.token,
        until: (e) => transitions(e).length >= 2,
      })
    )
    expect(got.map((e) => e.id)).toEqual(['2', '3'])
  })

  it('pings an idle stream', async () => {
    const got = await readSse(n.url + '/api/v1/events', {
      token: n.token,
      until: (e) => e.some((x) => x.event === 'ping'),
    })
    expect(got.at(-1)).toMatchObject({ event: 'ping' })
  })

  it('drops its bus subscription when the client goes away', async () => {
    const baseline = n.liveSubscriptions()
    const ac = new AbortController()
    const res = await fetch(n.url + '/api/v1/events', {
      headers: { authorization: `Bearer ${n.token}` },
      signal: ac.signal,
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/)
    await waitFor(() => n.liveSubscriptions() === baseline + 1)
    ac.abort()
    await waitFor(() => n.liveSubscriptions() === baseline)
  })

  it('refuses a malformed Last-Event-ID with 400', async () => {
    const res = await n.api('/api/v1/events', { headers: { 'last-event-id': 'abc' } })
    expect(res.status).toBe(400)
    expect(((await res.json()) as any).error.code).toBe('invalid_request')
  })
})
