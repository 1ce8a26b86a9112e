/** What the persistence parts share: the aedes shapes they are handed, and KV plumbing. */
import type { KvBucket, Subscription } from '../../common/bus/bus.ts'
import { KvConflictError } from '../../common/errors.ts'
import type { WirePacket } from '../codec.ts'

/** The parts of an aedes client (lib/client.js) the persistence reads. */
export interface Client {
  id: string
}

/** The parts of the aedes broker the persistence uses (handed over in `setup`). */
export interface Broker {
  id: string
  publish(packet: WirePacket, done: (err?: Error | null) => void): void
}

/** How a KV entry reaches a local cache: value null for a delete. */
export type ApplyEntry = (key: string, value: Uint8Array | null, revision: number) => void

export const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v))
export const parse = <T>(d: Uint8Array): T => JSON.parse(Buffer.from(d).toString('utf8')) as T

/** Apply a KV entry only if it is newer than what we hold for its key (watch vs. own writes). */
export function createVersioned<T>(onChange: (key: string, value: T | null) => void) {
  const revs = new Map<string, number>()
  return (key: string, value: T | null, revision: number): void => {
    if (revision <= (revs.get(key) ?? 0)) return
    revs.set(key, revision)
    onChange(key, value)
  }
}

/**
 * Fill a local cache from `kv` and keep it current. The watch goes into `watches` as soon as it
 * exists, so `destroy` stops it even if the read after it fails.
 */
export async function mirrorBucket(
  kv: KvBucket,
  apply: ApplyEntry,
  watches: Subscription[]
): Promise<void> {
  // Watch first and then read what is there: whichever arrives later with an older revision
  // is ignored, so nothing written between the two steps is lost.
  watches.push(
    await kv.watch((e) => apply(e.key, e.operation === 'PUT' ? e.value : null, e.revision))
  )
  const keys = await kv.keys()
  await Promise.all(
    keys.map(async (k) => {
      const e = await kv.get(k)
      if (e) apply(k, e.value, e.revision)
    })
  )
}

/** Compare-and-set loop on one key: `change` maps the current value to the next (null = delete). */
export async function casLoop<T>(
  kv: KvBucket,
  key: string,
  change: (current: T | null) => T | null
): Promise<{ value: T | null; revision: number } | null> {
  for (let attempt = 0; ; attempt++) {
    const entry = await kv.get(key)
    const next = change(entry ? parse<T>(entry.value) : null)
    try {
      if (next === null) {
        if (entry) await kv.delete(key)
        return null
      }
      const revision = entry
        ? await kv.update(key, json(next), entry.revision)
        : await kv.create(key, json(next))
      return { value: next, revision }
    } catch (err) {
      if (!(err instanceof KvConflictError) || attempt > 20) throw err
    }
  }
}
