import mqtt from 'mqtt'
import { TARGET } from './bridge.ts'

/** What the cloud side received of one fault's traffic. */
export interface Arrivals {
  /** `<publisher>:<seq>` → copies received. */
  copies: Map<string, number>
  /** Receive times, in order. */
  times: number[]
  /** Receive times of the copies beyond the first. */
  duplicateTimes: number[]
  /** `<publisher>:<seq>` → when its first copy came, and when that copy was sent. */
  firstAt: Map<string, { at: number; sentAt: number }>
  maxLatencyMs: number
}

/**
 * The counting subscriber on the upstream broker: subscribed to everything the bridge writes,
 * connected for the whole run, so late arrivals of an earlier fault are still counted.
 */
export interface CloudCounter {
  of(tag: string): Arrivals
  close(): Promise<void>
}

export async function startCloudCounter(url: string): Promise<CloudCounter> {
  const client = await mqtt.connectAsync(url, {
    protocolVersion: 4,
    clientId: `chaos-cloud-${Math.random().toString(36).slice(2, 8)}`,
    clean: false,
    reconnectPeriod: 250,
  })
  const byTag = new Map<string, Arrivals>()
  const of = (tag: string) => {
    let a = byTag.get(tag)
    if (!a)
      byTag.set(
        tag,
        (a = {
          copies: new Map(),
          times: [],
          duplicateTimes: [],
          firstAt: new Map(),
          maxLatencyMs: 0,
        })
      )
    return a
  }
  const prefix = `${TARGET}/`
  client.on('message', (topic, payload) => {
    const now = Date.now()
    const [tag, publisher] = topic.slice(prefix.length).split('/')
    const [seq, sentAt] = payload.toString().split(':')
    const a = of(tag!)
    const key = `${publisher}:${seq}`
    const copies = (a.copies.get(key) ?? 0) + 1
    a.copies.set(key, copies)
    a.times.push(now)
    if (copies > 1) a.duplicateTimes.push(now)
    else a.firstAt.set(key, { at: now, sentAt: Number(sentAt) })
    a.maxLatencyMs = Math.max(a.maxLatencyMs, now - Number(sentAt))
  })
  await client.subscribeAsync(`${TARGET}/#`, { qos: 1 })
  return { of, close: () => client.endAsync(true).catch(() => {}) }
}

/**
 * After a part came back at `healedAt`: how long until the next arrival, and until the last
 * message sent before it arrived (the backlog drained). Undefined while nothing arrived after.
 */
export function afterHeal(
  a: Arrivals,
  healedAt: number
): { resumeMs: number | undefined; drainMs: number } {
  const next = a.times.find((t) => t >= healedAt)
  let drained = healedAt
  for (const { at, sentAt } of a.firstAt.values()) {
    if (sentAt < healedAt) drained = Math.max(drained, at)
  }
  return { resumeMs: next === undefined ? undefined : next - healedAt, drainMs: drained - healedAt }
}

/** Longest silence between two arrivals. */
export function maxGap(times: readonly number[]): number {
  let gap = 0
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!)
  return gap
}

/** Times bunched by second from `start`: `+12s ×40, +19s ×3`. */
export function bySecond(times: readonly number[], start: number): string {
  const counts = new Map<number, number>()
  for (const t of times) {
    const s = Math.floor((t - start) / 1_000)
    counts.set(s, (counts.get(s) ?? 0) + 1)
  }
  return [...counts].map(([s, n]) => `+${s}s ×${n}`).join(', ')
}

/**
 * The duplicated messages as runs of consecutive numbers per publisher (`p0 1200–1455 ×256`):
 * a window sent again is one run; resends of single publishes are many short ones.
 */
export function duplicateRuns(a: Arrivals, most = 8): string {
  const bySender = new Map<string, number[]>()
  for (const [key, n] of a.copies) {
    if (n < 2) continue
    const [sender, seq] = key.split(':')
    bySender.set(sender!, [...(bySender.get(sender!) ?? []), Number(seq)])
  }
  const runs: string[] = []
  for (const [sender, seqs] of bySender) {
    seqs.sort((x, y) => x - y)
    let from = seqs[0]!
    for (let i = 1; i <= seqs.length; i++) {
      if (i < seqs.length && seqs[i] === seqs[i - 1]! + 1) continue
      const to = seqs[i - 1]!
      runs.push(from === to ? `${sender} ${from}` : `${sender} ${from}–${to} ×${to - from + 1}`)
      from = seqs[i]!
    }
  }
  return runs.length <= most
    ? runs.join(', ')
    : `${runs.slice(0, most).join(', ')} … (${runs.length} runs)`
}
