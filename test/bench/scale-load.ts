/**
 * The load of `npm run bench -- scale`, in the bench's own process: pub/sub pairs spread over
 * brokers (gateway throughput), and publishers writing into 100 namespaces while a counter on
 * the cloud broker takes what the bridges forward (bridge throughput).
 */
import { performance } from 'node:perf_hooks'
import mqtt, { type MqttClient } from 'mqtt'

const PAYLOAD_BYTES = 64
const IDLE_MS = 5_000 // a run ends when nothing arrived for this long (QoS 0 may drop)

export interface PairFigures {
  msgsPerSec: number
  p50Ms: number
  p99Ms: number
  received: number
  sent: number
}

export interface BridgeFigures {
  msgsPerSec: number
  /** Distinct messages the cloud received of those sent. */
  received: number
  sent: number
  duplicates: number
}

const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d
const quantile = (sorted: Float64Array, q: number): number =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : NaN

export async function connect(url: string, clientId?: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    clean: true,
    ...(clientId ? { clientId } : {}),
  })
  // MQTT.js leaves Nagle on: small packets would wait for delayed ACKs (~40 ms).
  ;(c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true)
  c.stream.setMaxListeners(0) // one 'drain' listener per blocked publish
  return c
}

/** Resolves when `done()` says so, or when nothing moved for IDLE_MS. */
async function settle(progress: () => number, done: () => boolean): Promise<void> {
  let last = -1
  let lastMoved = performance.now()
  while (!done()) {
    await new Promise((r) => setTimeout(r, 20))
    const now = progress()
    if (now !== last) {
      last = now
      lastMoved = performance.now()
    } else if (performance.now() - lastMoved > IDLE_MS) return
  }
}

/**
 * Pair j publishes `count / pairs.length` messages on its own topic from `pairs[j].pub` to a
 * subscriber on `pairs[j].sub`, at most `window` ahead of what its subscriber received.
 */
export async function measurePairs(
  pairs: Array<{ pub: string; sub: string }>,
  { qos, count, window, tag }: { qos: 0 | 1; count: number; window: number; tag: string }
): Promise<PairFigures> {
  const quota = Math.floor(count / pairs.length)
  const total = quota * pairs.length
  const latencies = new Float64Array(total)
  const pubs = await Promise.all(pairs.map((p) => connect(p.pub)))
  const subs = await Promise.all(pairs.map((p) => connect(p.sub)))
  const received = new Array<number>(pairs.length).fill(0)
  const wake: Array<(() => void) | undefined> = new Array(pairs.length)
  let all = 0
  let lastAt = 0
  let gaveUp = false
  try {
    await Promise.all(
      subs.map(async (s, j) => {
        s.on('message', (_t, payload) => {
          lastAt = performance.now()
          if (all < total) latencies[all] = lastAt - payload.readDoubleBE(0)
          all++
          received[j]!++
          wake[j]?.()
        })
        await s.subscribeAsync(`bench/${tag}/${j}`, { qos })
      })
    )
    const started = performance.now()
    const sending = Promise.all(
      pubs.map(async (p, j) => {
        for (let sent = 0; sent < quota; sent++) {
          while (sent - received[j]! >= window && !gaveUp) {
            await new Promise<void>((r) => (wake[j] = r))
          }
          if (gaveUp) return
          wake[j] = undefined
          const payload = Buffer.alloc(PAYLOAD_BYTES)
          payload.writeDoubleBE(performance.now(), 0)
          p.publish(`bench/${tag}/${j}`, payload, { qos })
        }
      })
    )
    // A lost QoS 0 message must not leave a publisher waiting on its window forever.
    await settle(
      () => all,
      () => all >= total
    )
    gaveUp = true
    for (const w of wake) w?.()
    await sending
    const got = latencies.subarray(0, Math.min(all, total)).sort()
    return {
      msgsPerSec: Math.round(all / ((lastAt - started) / 1_000)),
      p50Ms: round(quantile(got, 0.5)),
      p99Ms: round(quantile(got, 0.99)),
      received: all,
      sent: total,
    }
  } finally {
    await Promise.all([...pubs, ...subs].map((c) => c.endAsync(true)))
  }
}

export interface CloudCounter {
  /** Count the distinct messages of `tag` from here on. */
  expect(tag: string, publishers: number, perPublisher: number): void
  /** Distinct, duplicates, time of the last new one. */
  seen(): { distinct: number; duplicates: number; lastAt: number }
  close(): Promise<void>
}

/** A subscriber on the cloud broker under `prefix/#`: payloads carry publisher and sequence. */
export async function startCounter(url: string, filter: string): Promise<CloudCounter> {
  const client = await connect(url)
  let tag = ''
  let marks: Uint8Array[] = []
  let distinct = 0
  let duplicates = 0
  let lastAt = 0
  client.on('message', (topic, payload) => {
    if (!topic.endsWith(`/${tag}`) || payload.length < 14) return
    const seq = payload.readUInt32BE(8)
    const mark = marks[payload.readUInt16BE(12)]
    if (!mark || seq >= mark.length) return
    if (mark[seq]) duplicates++
    else {
      mark[seq] = 1
      distinct++
      lastAt = performance.now()
    }
  })
  await client.subscribeAsync(filter, { qos: 1 })
  return {
    expect(next, publishers, perPublisher) {
      tag = next
      marks = Array.from({ length: publishers }, () => new Uint8Array(perPublisher))
      distinct = duplicates = lastAt = 0
    },
    seen: () => ({ distinct, duplicates, lastAt }),
    close: () => client.endAsync(true),
  }
}

/**
 * `publishers` QoS 1 publishers, publisher j on `urls[j % urls.length]`, each writing to the
 * namespaces k ≡ j (mod publishers) in turn (`<source(k)>/<tag>`), at most `window` unacknowledged
 * each; the counter takes the copies the bridges put on the cloud broker. The rate is distinct
 * arrivals over the time from the first publish to the last new arrival.
 */
export async function measureBridges(
  urls: string[],
  counter: CloudCounter,
  {
    namespaces,
    source,
    publishers,
    count,
    window,
    tag,
  }: {
    namespaces: number
    source: (k: number) => string
    publishers: number
    count: number
    window: number
    tag: string
  }
): Promise<BridgeFigures> {
  const quota = Math.floor(count / publishers)
  const clients = await Promise.all(
    Array.from({ length: publishers }, (_, j) => connect(urls[j % urls.length]!))
  )
  counter.expect(tag, publishers, quota)
  let acks = 0
  let gaveUp = false
  const wakes: Array<(() => void) | undefined> = new Array(publishers)
  try {
    const started = performance.now()
    const sending = Promise.all(
      clients.map(async (c, j) => {
        const mine = Array.from({ length: namespaces }, (_, k) => k).filter(
          (k) => k % publishers === j
        )
        let inflight = 0
        const acked = () => {
          acks++
          inflight--
          wakes[j]?.()
        }
        for (let seq = 0; seq < quota; seq++) {
          while (inflight >= window && !gaveUp) await new Promise<void>((r) => (wakes[j] = r))
          if (gaveUp) return
          const payload = Buffer.alloc(PAYLOAD_BYTES)
          payload.writeDoubleBE(performance.now(), 0)
          payload.writeUInt32BE(seq, 8)
          payload.writeUInt16BE(j, 12)
          inflight++
          c.publish(`${source(mine[seq % mine.length]!)}/${tag}`, payload, { qos: 1 }, acked)
        }
      })
    )
    // Neither an acknowledgement nor an arrival for IDLE_MS: the run ends with what arrived.
    await settle(
      () => counter.seen().distinct + acks,
      () => counter.seen().distinct >= quota * publishers
    )
    gaveUp = true
    for (const w of wakes) w?.()
    await sending
    const { distinct, duplicates, lastAt } = counter.seen()
    return {
      msgsPerSec: Math.round(distinct / ((lastAt - started) / 1_000)),
      received: distinct,
      sent: quota * publishers,
      duplicates,
    }
  } finally {
    await Promise.all(clients.map((c) => c.endAsync(true)))
  }
}
