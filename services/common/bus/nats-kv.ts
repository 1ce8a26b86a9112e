import type { JetStreamManager } from '@nats-io/jetstream'
import { KvWatchInclude, type KV, type KvEntry as NatsKvEntry } from '@nats-io/kv'
import { KvConflictError, NotFoundError, ValidationError } from '../errors.ts'
import {
  callSafely,
  validateKvKey,
  type BusLogger,
  type KvBucket,
  type KvEntry,
  type OldestEntry,
} from './bus.ts'

// JetStream API error codes (@nats-io/jetstream JetStreamApiCodes).
const WRONG_LAST_SEQUENCE = 10071
const WRONG_LAST_SEQUENCE_UNKNOWN = 10164
const STREAM_NOT_FOUND = 10059
const KV_OPERATION = 'KV-Operation' // NATS.js's KV marks a delete or purge with this header

function apiCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'number' ? code : undefined
}

function mapKvError(err: unknown, bucket: string, key: string): unknown {
  const code = apiCode(err)
  const message = err instanceof Error ? err.message : ''
  if (code === WRONG_LAST_SEQUENCE || code === WRONG_LAST_SEQUENCE_UNKNOWN) {
    return new KvConflictError(bucket, key, message)
  }
  if (code === STREAM_NOT_FOUND || message === 'stream not found') {
    return new NotFoundError('KV bucket', bucket)
  }
  return err
}

function toEntry(e: NatsKvEntry): KvEntry {
  // PURGE is a delete that also drops history; callers only need "gone".
  return {
    key: e.key,
    value: new Uint8Array(e.value), // a plain copy: NATS hands out Buffers over its read buffer
    revision: e.revision,
    operation: e.operation === 'PUT' ? 'PUT' : 'DEL',
  }
}

/** Our KvBucket over a NATS.js KV: typed errors, deleted keys read as absent. */
const KEYS_DEADLINE_MS = 10_000 // a listing that has not ended by then is an error, not a hang
const KEYS_IDLE_CHECK_MS = 500

/**
 * The live keys under `filter` as of the call. NATS.js's own `keys()` ends only when its
 * consumer's pending count reaches zero, which it may never do while keys under the filter are
 * being written (seen: a gateway's outgoing queue, written and acknowledged at once). Here the
 * listing is bounded by a snapshot: the matching subjects at the
 * start; the last value of each arrives once (the old one, or a newer one when it was rewritten
 * meanwhile), and the listing ends when every key of the snapshot came.
 */
async function listKeys(
  kv: KV,
  jsm: JetStreamManager,
  name: string,
  filter: string
): Promise<string[]> {
  const info = await jsm.streams.info(`KV_${name}`, { subjects_filter: `$KV.${name}.${filter}` })
  // `num_subjects` counts the whole stream; the `subjects` map is the filtered detail.
  const prefix = `$KV.${name}.`
  const unseen = new Set(Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length)))
  if (unseen.size === 0) return []
  const live = new Set<string>()
  const it = await kv.watch({ key: filter, include: KvWatchInclude.LastValue, headers_only: true })
  const deadline = setTimeout(
    () => it.stop(new Error(`listing keys of ${name} took over ${KEYS_DEADLINE_MS} ms`)),
    KEYS_DEADLINE_MS
  )
  let seen = 0
  // Every subject of the snapshot may expire (TTL) before the watch starts: then no entry ever
  // comes and the listing waited for its deadline. While none came, the snapshot is taken again.
  const idle = setInterval(() => {
    if (seen > 0) return
    jsm.streams.info(`KV_${name}`, { subjects_filter: `$KV.${name}.${filter}` }).then(
      (again) => {
        if (seen === 0 && Object.keys(again.state.subjects ?? {}).length === 0) it.stop()
      },
      () => {} // the deadline still bounds the listing
    )
  }, KEYS_IDLE_CHECK_MS)
  try {
    for await (const e of it) {
      seen++
      if (e.operation === 'PUT') live.add(e.key)
      else live.delete(e.key)
      // Done once every key of the snapshot was seen, at its last value then or a newer one (a
      // key rewritten meanwhile comes after the others: stopping at the first newer entry left
      // the other rewritten keys out, and a presence view came back short); one that expired
      // since the snapshot never comes, and the consumer's pending count says when all came.
      unseen.delete(e.key)
      if (unseen.size === 0 || e.delta === 0) break
    }
  } finally {
    clearTimeout(deadline)
    clearInterval(idle)
    it.stop()
  }
  return [...live]
}

/** The keys of the messages under `filter`, from the leader's stream info (KvKeysOptions). */
async function subjectKeys(jsm: JetStreamManager, name: string, filter: string) {
  const prefix = `$KV.${name}.`
  const info = await jsm.streams.info(`KV_${name}`, { subjects_filter: `${prefix}${filter}` })
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length))
}

/** A key's value as the stream's leader has it (STREAM.MSG.GET), not a replica's direct get. */
async function leaderGet(
  jsm: JetStreamManager,
  name: string,
  key: string
): Promise<KvEntry | null> {
  const m = await jsm.streams.getMessage(`KV_${name}`, { last_by_subj: `$KV.${name}.${key}` })
  const op = m?.header?.get(KV_OPERATION)
  if (!m || op === 'DEL' || op === 'PURGE') return null
  return { key, value: new Uint8Array(m.data), revision: m.seq, operation: 'PUT' }
}

const OLDEST_SKIPS = 100 // delete markers stepped over before giving up on finding a live head

/**
 * The first message in stream order under `filter` (STREAM.MSG.GET next_by_subj from the leader):
 * one round trip for a queue whose entries are erased, not deleted. Delete markers are stepped
 * over, a bounded number of times.
 */
async function oldestEntry(
  kv: KV,
  jsm: JetStreamManager | undefined,
  name: string,
  filter: string
): Promise<OldestEntry | null> {
  if (!jsm) {
    // Without a manager (never in the fabric), the slow way: every key's value.
    let best: OldestEntry | null = null
    for await (const k of await kv.keys(filter)) {
      const e = await kv.get(k)
      if (e?.operation === 'PUT' && (!best || e.revision < best.revision))
        best = { ...toEntry(e), createdAt: e.created.getTime() }
    }
    return best
  }
  const subject = `$KV.${name}.${filter}`
  let seq = 1
  for (let i = 0; i < OLDEST_SKIPS; i++) {
    const query = { seq, next_by_subj: subject } as unknown as { seq: number }
    const m = await jsm.streams.getMessage(`KV_${name}`, query).catch((err: unknown) => {
      if (/no message found/i.test(String(err))) return null
      throw err
    })
    if (!m) return null
    const op = m.header?.get(KV_OPERATION)
    if (op !== 'DEL' && op !== 'PURGE') {
      const key = m.subject.slice(`$KV.${name}.`.length)
      const value = new Uint8Array(m.data)
      return { key, value, revision: m.seq, operation: 'PUT', createdAt: m.time.getTime() }
    }
    seq = m.seq + 1
  }
  return null
}

export function wrapNatsKv(
  kv: KV,
  name: string,
  log?: BusLogger,
  jsm?: JetStreamManager
): KvBucket {
  let destroyed = false
  async function guard<T>(key: string, op: () => Promise<T>): Promise<T> {
    // After destroy, NATS answers a direct get with a timeout; say what actually happened.
    if (destroyed) throw new NotFoundError('KV bucket', name)
    try {
      return await op()
    } catch (err) {
      throw mapKvError(err, name, key)
    }
  }

  return {
    name,
    async get(key, { latest = false } = {}) {
      validateKvKey(key)
      return guard(key, async () => {
        if (latest && jsm) return leaderGet(jsm, name, key)
        const e = await kv.get(key)
        return e?.operation === 'PUT' ? toEntry(e) : null
      })
    },
    async create(key, value) {
      validateKvKey(key)
      return guard(key, () => kv.create(key, value.slice()))
    },
    async update(key, value, revision) {
      validateKvKey(key)
      if (!(revision >= 1)) throw new ValidationError('revision must be a positive integer')
      return guard(key, () => kv.update(key, value.slice(), revision))
    },
    async put(key, value) {
      validateKvKey(key)
      return guard(key, () => kv.put(key, value.slice()))
    },
    async delete(key) {
      validateKvKey(key)
      return guard(key, () => kv.delete(key))
    },
    async erase(key, revision) {
      validateKvKey(key)
      if (!jsm) return this.delete(key)
      return guard(key, async () => {
        // A KV delete appends a marker that stays until the bucket's max age (NATS 2.9 has no
        // marker TTL). A stream purge of the key's subject removes its message and appends
        // nothing, in one round trip; `seq` bounds it to `revision` and older, so a newer value
        // stays (history 1 keeps at most one message a key anyway).
        await jsm.streams.purge(`KV_${name}`, {
          filter: `$KV.${name}.${key}`,
          ...(revision === undefined ? {} : { seq: revision + 1 }),
        })
      })
    },
    async keys(filter = '>', { withDeleted = false } = {}) {
      validateKvKey(filter, { wildcards: true })
      return guard(filter, async () => {
        if (jsm && withDeleted) return subjectKeys(jsm, name, filter)
        if (jsm) return listKeys(kv, jsm, name, filter)
        const out: string[] = []
        for await (const k of await kv.keys(filter)) out.push(k)
        return out
      })
    },
    async oldest(filter) {
      validateKvKey(filter, { wildcards: true })
      return guard(filter, () => oldestEntry(kv, jsm, name, filter))
    },
    async watch(onEntry, { key = '>', includeCurrent = true } = {}) {
      validateKvKey(key, { wildcards: true })
      return guard(key, async () => {
        // NATS.js marks the last replayed entry as an update (isUpdate = i >= num_pending), so
        // "current" is decided by revision: anything up to the stream's last sequence now.
        const upTo = includeCurrent ? (await kv.status()).streamInfo.state.last_seq : 0
        const include = includeCurrent ? KvWatchInclude.LastValue : KvWatchInclude.UpdatesOnly
        const it = await kv.watch({ key, include })
        void (async () => {
          for await (const e of it) {
            // The replay carries delete markers of deleted keys; "current" means live keys.
            if (e.revision <= upTo && e.operation !== 'PUT') continue
            const entry = toEntry(e)
            callSafely(log, `${name}.${e.key}`, () => onEntry(entry))
          }
        })().catch((err: unknown) => log?.warn({ err, bucket: name }, 'KV watch ended'))
        return {
          async unsubscribe() {
            it.stop()
          },
        }
      })
    },
    async destroy() {
      destroyed = true
      try {
        await kv.destroy()
      } catch (err) {
        // Already gone is what destroy wants; anything else is a real failure.
        if (!(mapKvError(err, name, '>') instanceof NotFoundError)) throw err
      }
    },
  }
}
