/**
 * The console's Upstreams page in real headless Chromium, and Accept → Approved on the downstream,
 * each against real `uns-bridge start` processes with the default settings (what a user gets).
 *
 * Console: one instance holds 1,000 handshake upstreams, all Pending: each points at its own
 * loopback address 127.1.x.y on a port nobody listens on, so every request and poll is refused at
 * once (no DNS, no connect timeout) and no twin check refuses two of them. Signed in, the page is
 * loaded a warm-up time and then LOADS times (same browser context: cookie and cache warm).
 * - TTFB: the document's Navigation Timing responseStart − requestStart; also the page's list
 *   request (`GET /api/v1/upstreams?limit=1000`, Resource Timing, same difference).
 * - TTI: from navigation start to the first animation frame with all 1,000 `tr[data-id]` rows in
 *   the DOM. The page shows its rows only after the list and every upstream's detail (link
 *   health: one GET each) answered, so by then the page's data requests are done; the event
 *   stream it keeps open is not counted.
 * Anchors in the same run and browser: a bare node:http + fs server serving the console's own
 * files (TTFB and load of the shell), and the page's 1,001 API requests made from Node with as
 * many in flight as Chromium opens to one host (6): the data alone, without the browser.
 *
 * Accept → Approved: A asks B (its long poll then waits at B), B's operator accepts over the API,
 * and the clock stops when A's own event stream (`/api/v1/events`) says the upstream is Approved.
 * Anchor: B's accept call alone. Only B's handshake rate limit is raised (each round sends two
 * handshake requests; the default 10/min would refuse the rounds after the burst).
 */
import { createServer, type Server } from 'node:http'
import { readFile } from 'node:fs/promises'
import { cpuSeconds } from './proc.ts'
import { basename, extname, join } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Browser, Page } from 'playwright-core'
import { ASSETS_DIR } from '../../services/handshake/console/assets.ts'
import { freePort } from '../../deploy/free-port.ts'
import { api, apiRequest, startInstance, type Instance } from '../helpers/instance.ts'
import { launchChromium, openPage, signIn } from '../console/browser.ts'
import { percentile } from './bridge-measure.ts'

const UPSTREAMS = 1_000
const CREATE_CONCURRENCY = 4
const LOADS = 5
const IDLE_SAMPLE_MS = 5_000
/**
 * On about:blank before each load: the page left behind re-reads everything every 3 s, and with
 * 1,000 upstreams a read outlasts that, so the instance is still answering the last one.
 */
const SETTLE_MS = 2_000
const ROUNDS = 15
const WARMUP_ROUNDS = 1
/**
 * How long B's operator takes to accept. A new upstream's status watch first finds no request id
 * (the create is still sending it) and looks again after its 2 s retry: an accept sooner than
 * that waits for it (measured: Approved ≈ 1.0 s after an accept 1 s after the create).
 */
const PARKED_MS = 3_000

export interface Spread {
  n: number
  p50Ms: number
  p99Ms: number
  maxMs: number
}

const round = (x: number, digits = 1) => Number(x.toFixed(digits))

export function spread(samples: number[]): Spread {
  const s = Float64Array.from(samples).sort()
  const at = (q: number) => percentile(s, q)
  return { n: s.length, p50Ms: round(at(0.5)), p99Ms: round(at(0.99)), maxMs: round(s.at(-1)!) }
}

const ratio = (a: number, b: number) => (b > 0 ? round(a / b, 2) : null)

/**
 * `fn` again after a connection reset (seen now and then from the loaded instance): what the
 * bench measures is the page and the approval, not the client's connection pool.
 */
async function retried<T>(fn: () => Promise<T>, tries = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn()
    } catch (err) {
      if (i >= tries || !(err instanceof TypeError && /fetch failed/.test(err.message))) throw err
      console.error(`retrying after ${String((err as { cause?: unknown }).cause ?? err)}`)
    }
  }
}

async function createUpstreams(inst: Instance): Promise<number> {
  const refused = await freePort()
  const start = performance.now()
  let next = 0
  await Promise.all(
    Array.from({ length: CREATE_CONCURRENCY }, async () => {
      while (next < UPSTREAMS) {
        const i = next++
        const host = `mqtt://127.1.${i >> 8}.${i & 255}`
        // A retry after a reset may find the first try's upstream: 409 already_exists.
        const res = await retried(() =>
          apiRequest(inst, 'POST', '/api/v1/upstreams', { host, httpPort: refused })
        )
        const ok = res.status === 201 && res.body.status === 'Pending'
        if (!ok && res.body?.error?.code !== 'already_exists')
          throw new Error(`upstream ${i}: ${res.status} ${JSON.stringify(res.body)}`)
      }
    })
  )
  return performance.now() - start
}

/** A bare file server for the anchor: the console's own files, read from disk per request. */
async function staticServer(): Promise<{ url: string; server: Server }> {
  const types: Record<string, string> = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.svg': 'image/svg+xml',
  }
  const server = createServer((req, res) => {
    const name = basename(new URL(req.url ?? '/', 'http://x').pathname) || 'index.html'
    readFile(join(ASSETS_DIR, name)).then(
      (body) => {
        res.writeHead(200, { 'content-type': types[extname(name)] ?? 'application/octet-stream' })
        res.end(body)
      },
      () => {
        res.writeHead(404).end()
      }
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, server }
}

/** Before any page script: keep every resource entry, and note the first frame with all rows. */
const INIT_SCRIPT = `(() => {
  performance.setResourceTimingBufferSize(10000)
  const want = ${UPSTREAMS}
  const tick = () => {
    if (document.querySelectorAll('tr[data-id]').length >= want) window.__rowsAt = performance.now()
    else requestAnimationFrame(tick)
  }
  if (location.pathname.startsWith('/console/')) requestAnimationFrame(tick)
})()`

interface Load {
  ttfbMs: number
  loadMs: number
  listTtfbMs?: number
  ttiMs?: number
  apiRequests?: number
}

/** One fresh navigation to `url`; with `rows`, wait for the table and read the page's requests. */
async function loadOnce(page: Page, url: string, rows: boolean): Promise<Load> {
  await page.goto('about:blank')
  await new Promise((r) => setTimeout(r, SETTLE_MS))
  await page.goto(url, { waitUntil: 'load' })
  if (rows) {
    await page.waitForFunction(
      () => (globalThis as { __rowsAt?: number }).__rowsAt !== undefined,
      null,
      {
        timeout: 180_000,
      }
    )
  }
  // A string, as the page's globals have no types here (no DOM lib); run by CDP, not by eval.
  return (await page.evaluate(`(() => {
    const nav = performance.getEntriesByType('navigation')[0]
    const res = performance.getEntriesByType('resource')
    const list = res.find((r) => r.name.includes('/api/v1/upstreams?limit='))
    return {
      ttfbMs: nav.responseStart - nav.requestStart,
      loadMs: nav.loadEventEnd,
      listTtfbMs: list ? list.responseStart - list.requestStart : undefined,
      ttiMs: window.__rowsAt,
      apiRequests: res.filter((r) => r.name.includes('/api/v1/upstreams') || r.name.includes('/api/v1/links')).length,
    }
  })()`)) as Load
}

async function loadMany(page: Page, url: string, rows: boolean): Promise<Load[]> {
  await loadOnce(page, url, rows) // warm-up
  const loads: Load[] = []
  for (let i = 0; i < LOADS; i++) loads.push(await loadOnce(page, url, rows))
  return loads
}

/** The page's data requests from Node, as the page makes them: the list and the links, together. */
async function dataAlone(inst: Instance): Promise<number> {
  const get = (path: string) =>
    retried(async () => {
      const res = await fetch(inst.httpUrl + path, {
        headers: { authorization: `Bearer ${inst.adminToken}` },
      })
      if (!res.ok) throw new Error(`GET ${path} → ${res.status}`)
      return res.json()
    })
  const start = performance.now()
  await Promise.all([get(`/api/v1/upstreams?limit=${UPSTREAMS}`), get('/api/v1/links')])
  return performance.now() - start
}

const pick = (loads: Load[], key: keyof Load) => spread(loads.map((l) => l[key] ?? NaN))

/** Idle CPU of the instance with its upstreams (what polling unreachable servers costs it). */
async function idleCpu(pid: number): Promise<number> {
  const before = cpuSeconds(pid)
  await new Promise((r) => setTimeout(r, IDLE_SAMPLE_MS))
  return round(((cpuSeconds(pid) - before) / (IDLE_SAMPLE_MS / 1_000)) * 100, 0)
}

export async function runConsoleBench(): Promise<Record<string, unknown>> {
  let inst: Instance | undefined
  let browser: Browser | undefined
  let anchor: { url: string; server: Server } | undefined
  try {
    ;[inst, browser, anchor] = await Promise.all([
      startInstance(),
      launchChromium(),
      staticServer(),
    ])
    const createMs = await createUpstreams(inst).catch((err: unknown) => {
      console.error(inst?.output().split('\n').slice(-30).join('\n'))
      throw err
    })
    console.error(`created ${UPSTREAMS} upstreams in ${(createMs / 1_000).toFixed(1)} s`)
    const idleCpuPct = await idleCpu(inst.process.child.pid!)
    const { page, context, problems } = await openPage(browser)
    await context.addInitScript(INIT_SCRIPT)
    await signIn(page, inst)
    const t = performance.now()
    const consoleLoads = await loadMany(page, inst.httpUrl + '/console/#/upstreams', true)
    console.error(`console loads took ${((performance.now() - t) / 1_000).toFixed(1)} s`)
    const anchorLoads = await loadMany(page, anchor.url + '/console/index.html', false)
    const data: number[] = []
    for (let i = 0; i < LOADS + 1; i++) data.push(await dataAlone(inst))
    data.shift() // warm-up
    if (problems.length) throw new Error(`page problems: ${problems.join('; ')}`)
    const result = {
      upstreams: UPSTREAMS,
      loads: LOADS,
      createSeconds: round(createMs / 1_000),
      idleCpuPct,
      apiRequestsPerLoad: consoleLoads[0]!.apiRequests,
      ttfb: pick(consoleLoads, 'ttfbMs'),
      listTtfb: pick(consoleLoads, 'listTtfbMs'),
      tti: pick(consoleLoads, 'ttiMs'),
      load: pick(consoleLoads, 'loadMs'),
      anchorTtfb: pick(anchorLoads, 'ttfbMs'),
      anchorLoad: pick(anchorLoads, 'loadMs'),
      dataAlone: spread(data),
    }
    printConsole(result)
    return result
  } finally {
    await browser?.close()
    anchor?.server.close()
    await inst?.stop()
  }
}

function printConsole(r: {
  ttfb: Spread
  listTtfb: Spread
  tti: Spread
  load: Spread
  anchorTtfb: Spread
  anchorLoad: Spread
  dataAlone: Spread
  createSeconds: number
  idleCpuPct: number
  apiRequestsPerLoad?: number | undefined
}) {
  console.log(
    `\nconsole, Upstreams page with ${UPSTREAMS} Pending upstreams (created in ${r.createSeconds} s; ` +
      `instance CPU over 5 s just after creating them, their first polls still backing off: ${r.idleCpuPct} %), headless Chromium, ${LOADS} loads after a warm-up`
  )
  const line = (name: string, s: Spread, anchorName: string, a: Spread) =>
    console.log(
      `${name.padEnd(34)} p50 ${s.p50Ms.toFixed(1).padStart(8)} ms  max ${s.maxMs.toFixed(1).padStart(8)} ms` +
        `   ${anchorName}: p50 ${a.p50Ms.toFixed(1)} ms (ratio ${ratio(s.p50Ms, a.p50Ms)})`
    )
  line('TTFB document', r.ttfb, 'static file server', r.anchorTtfb)
  line('TTFB list (?limit=1000)', r.listTtfb, 'static file server', r.anchorTtfb)
  line('load event (shell)', r.load, 'static file server', r.anchorLoad)
  line(
    `TTI (${UPSTREAMS} rows, ${r.apiRequestsPerLoad} API requests)`,
    r.tti,
    'the same data requests from Node (list and links together)',
    r.dataAlone
  )
}

/** Every transition on `inst`'s event stream; `approved(id)` resolves when that upstream is Approved. */
async function watchEvents(inst: Instance) {
  const ac = new AbortController()
  const waiters = new Map<string, () => void>()
  const res = await fetch(inst.httpUrl + '/api/v1/events', {
    headers: { authorization: `Bearer ${inst.adminToken}` },
    signal: ac.signal,
  })
  if (res.status !== 200) throw new Error(`events answered ${res.status}`)
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  void (async () => {
    let buf = ''
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: '', done: true }))
      if (done) return
      buf += value
      let i: number
      while ((i = buf.indexOf('\n\n')) !== -1) {
        const data = buf
          .slice(0, i)
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join('')
        buf = buf.slice(i + 2)
        if (!data) continue
        const rec = JSON.parse(data) as { machine?: string; machineId?: string; to?: string }
        if (rec.machine === 'upstream' && rec.to === 'Approved') waiters.get(rec.machineId!)?.()
      }
    }
  })()
  return {
    approved: (id: string) => new Promise<void>((resolve) => waiters.set(id, resolve)),
    close: () => ac.abort(),
  }
}

export async function runAcceptBench(): Promise<Record<string, unknown>> {
  let a: Instance | undefined
  let b: Instance | undefined
  let events: Awaited<ReturnType<typeof watchEvents>> | undefined
  try {
    const rate = ['--handshake-rate-per-min', '100000', '--handshake-rate-burst', '100000']
    ;[a, b] = await Promise.all([startInstance(), startInstance({ args: rate })])
    events = await watchEvents(a)
    const target = {
      host: 'mqtt://127.0.0.1',
      brokerPort: Number(new URL(b.mqttUrl!).port),
      httpPort: Number(new URL(b.httpUrl).port),
    }
    const approved: number[] = []
    const acceptCall: number[] = []
    for (let i = 0; i < WARMUP_ROUNDS + ROUNDS; i++) {
      const up = await api(a, 'POST', '/api/v1/upstreams', target)
      if (up.status !== 'Pending') throw new Error(`upstream is ${up.status}: ${up.lastError}`)
      await new Promise((r) => setTimeout(r, PARKED_MS))
      const seen = events.approved(up.id)
      const t0 = performance.now()
      await api(b, 'POST', `/api/v1/requests/${up.remoteRequestId}/accept`)
      const t1 = performance.now()
      const timeout = setTimeout(() => console.error(`round ${i}: not Approved after 60 s`), 60_000)
      await seen
      clearTimeout(timeout)
      if (i >= WARMUP_ROUNDS) {
        approved.push(performance.now() - t0)
        acceptCall.push(t1 - t0)
      }
      await api(a, 'DELETE', `/api/v1/upstreams/${up.id}`)
    }
    const result = {
      rounds: ROUNDS,
      acceptToApproved: spread(approved),
      acceptCall: spread(acceptCall),
    }
    const s = result.acceptToApproved
    console.log(
      `\nAccept → Approved (default polling, 2 instances, ${ROUNDS} rounds): p50 ${s.p50Ms} ms, ` +
        `p99 ${s.p99Ms} ms, max ${s.maxMs} ms   anchor, B's accept call alone: p50 ` +
        `${result.acceptCall.p50Ms} ms (ratio ${ratio(s.p50Ms, result.acceptCall.p50Ms)})`
    )
    return result
  } finally {
    events?.close()
    await Promise.all([a?.stop(), b?.stop()])
  }
}
