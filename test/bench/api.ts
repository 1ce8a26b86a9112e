/**
 * API benchmark over a real HTTP socket: requests/s and latency of `GET /api/v1/upstreams`
 * with 100 upstreams, and of the full accept round trip between two instances (A adds the
 * upstream and sends the request, B's operator accepts, A refreshes and is Approved). The same
 * app's bare `GET /healthz` in the same run is the anchor: the cost of hono + node-server alone.
 * Each instance is in-process: in-process bus, store on PGlite.
 *
 * Then api-console.ts: the console's Upstreams page with 1,000 upstreams in headless Chromium
 * (TTFB, time to interactive) and Accept → Approved on the downstream with default polling, each
 * against real `uns-bridge start` processes. One JSON line carries all of it.
 */
import { startNode, type Node } from '../handshake/fixture.ts'
import { runAcceptBench, runConsoleBench } from './api-console.ts'

const UPSTREAMS = 100
const CONCURRENCY = 16 // clients in flight at once
const HEALTH_REQUESTS = 5_000
const LIST_REQUESTS = 1_000
const ROUND_TRIPS = 50 // sequential: B holds one live request per downstream instance
const WARMUP = 50

interface Figures {
  requests: number
  rps: number
  p50Ms: number
  p99Ms: number
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits))

function figures(latencies: number[], wallMs: number): Figures {
  const sorted = [...latencies].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  return {
    requests: sorted.length,
    rps: round((sorted.length / wallMs) * 1_000, 0),
    p50Ms: round(at(0.5)),
    p99Ms: round(at(0.99)),
  }
}

/** `count` calls of `one`, `concurrency` at a time; each call's latency and the wall time. */
async function load(
  one: () => Promise<void>,
  count: number,
  concurrency: number
): Promise<Figures> {
  for (let i = 0; i < WARMUP; i++) await one()
  const latencies: number[] = []
  let next = 0
  const start = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++
        const t = performance.now()
        await one()
        latencies.push(performance.now() - t)
      }
    })
  )
  return figures(latencies, performance.now() - start)
}

async function ok(res: Response): Promise<unknown> {
  const text = await res.text()
  if (!res.ok) throw new Error(`${res.status} ${text}`)
  return text ? JSON.parse(text) : null
}

export async function runApiBench(): Promise<object> {
  const http = await runHttpBench()
  const consolePage = await runConsoleBench()
  const accept = await runAcceptBench()
  const result = { ...http, console: consolePage, approval: accept }
  console.log(JSON.stringify(result))
  return result
}

/** The HTTP figures over in-process nodes: the table, and its fields of the JSON line. */
async function runHttpBench(): Promise<object> {
  // Long poll intervals: the round trip is driven by refresh, not by background polling.
  const quiet = { pollMs: 600_000, slowPollMs: 600_000, rate: { perMinute: 1e9, burst: 1e9 } }
  const nodes: Node[] = []
  try {
    const [a, b] = await Promise.all([startNode(quiet), startNode(quiet)])
    nodes.push(a, b)
    for (let i = 0; i < UPSTREAMS; i++) {
      await a.call('/api/v1/upstreams', {
        method: 'POST',
        json: { kind: 'mqtt', host: `mqtt://broker-${i}.example` },
      })
    }
    const health = await load(
      async () => void (await ok(await fetch(a.url + '/healthz'))),
      HEALTH_REQUESTS,
      CONCURRENCY
    )
    const list = await load(
      async () => {
        const ups = (await ok(await a.api('/api/v1/upstreams'))) as unknown[]
        if (ups.length !== UPSTREAMS) throw new Error(`listed ${ups.length} upstreams`)
      },
      LIST_REQUESTS,
      CONCURRENCY
    )

    // What the store alone costs for the same read (bus + PGlite + JSON), without HTTP.
    const storeOnly = await load(
      async () => void (await a.store.call('upstream.list', {})),
      LIST_REQUESTS,
      CONCURRENCY
    )

    const target = { host: 'mqtt://127.0.0.1', httpPort: Number(new URL(b.url).port) }
    const roundTrip = async () => {
      const up = (await a.call('/api/v1/upstreams', { method: 'POST', json: target })) as any
      await b.call(`/api/v1/requests/${up.remoteRequestId}/accept`, { method: 'POST' })
      const after = (await a.call(`/api/v1/upstreams/${up.id}/refresh`, { method: 'POST' })) as any
      if (after.status !== 'Approved') throw new Error(`round trip ended ${after.status}`)
      return up.id as string
    }
    // Deleting (which withdraws on B) is outside the timed part but needed before the next one.
    for (let i = 0; i < 3; i++)
      await a.call(`/api/v1/upstreams/${await roundTrip()}`, { method: 'DELETE' })
    const trips: number[] = []
    const start = performance.now()
    let timedMs = 0
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const t = performance.now()
      const id = await roundTrip()
      const took = performance.now() - t
      trips.push(took)
      timedMs += took
      await a.call(`/api/v1/upstreams/${id}`, { method: 'DELETE' })
    }
    const accept = figures(trips, timedMs)
    const wallS = (performance.now() - start) / 1_000

    const rows: [string, Figures][] = [
      ['GET /healthz (anchor)', health],
      [`GET /api/v1/upstreams (${UPSTREAMS})`, list],
      [`  store upstream.list alone, no HTTP`, storeOnly],
      ['accept round trip (3 calls, 2 instances)', accept],
    ]
    console.log(
      `concurrency ${CONCURRENCY} for the GETs; round trips one at a time (${wallS.toFixed(1)} s with deletes)`
    )
    console.log(
      'route'.padEnd(44) +
        'requests'.padStart(10) +
        'req/s'.padStart(10) +
        'p50 ms'.padStart(10) +
        'p99 ms'.padStart(10)
    )
    for (const [name, f] of rows) {
      console.log(
        name.padEnd(44) +
          String(f.requests).padStart(10) +
          String(f.rps).padStart(10) +
          f.p50Ms.toFixed(2).padStart(10) +
          f.p99Ms.toFixed(2).padStart(10)
      )
    }
    const result = {
      bench: 'api',
      concurrency: CONCURRENCY,
      healthz: health,
      upstreamsList: { upstreams: UPSTREAMS, ...list },
      storeListOnly: storeOnly,
      acceptRoundTrip: accept,
      listVsHealthzRps: round(list.rps / health.rps, 3),
    }
    return result
  } finally {
    await Promise.all(nodes.map((n) => n.close()))
  }
}
