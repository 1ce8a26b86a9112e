import { KvConflictError, NotFoundError, ValidationError } from '../errors.ts'
import {
  bucketName,
  callSafely,
  subjectMatches,
  validateKvKey,
  type BusLogger,
  type KvBucket,
  type KvEntry,
  type KvOptions,
  type KvWatchOptions,
  type Subscription,
} from './bus.ts'
import { expired, openKvJournal, type JournalEntry, type KvJournal } from './kv-journal.ts'

type Stored = JournalEntry

interface Watcher {
  tokens: string[]
  active: boolean
  onEntry(entry: KvEntry): void
}

/**
 * A bucket's entries, also indexed by their key's first token: a session's queue (`<client>.>`)
 * is listed by visiting its own keys, not every session's (ARCHITECTURE.md §7).
 */
export class TokenIndexedEntries extends Map<string, Stored> {
  private readonly byFirst = new Map<string, Set<string>>()

  /** (Map's constructor would call `set` before the index exists.) */
  static of(entries: Iterable<[string, Stored]>): TokenIndexedEntries {
    const indexed = new TokenIndexedEntries()
    for (const [k, v] of entries) indexed.set(k, v)
    return indexed
  }

  override set(key: string, value: Stored): this {
    if (!super.has(key)) {
      const first = firstToken(key)
      let keys = this.byFirst.get(first)
      if (!keys) this.byFirst.set(first, (keys = new Set()))
      keys.add(key)
    }
    return super.set(key, value)
  }

  override delete(key: string): boolean {
    if (!super.delete(key)) return false
    const first = firstToken(key)
    const keys = this.byFirst.get(first)
    keys?.delete(key)
    if (keys?.size === 0) this.byFirst.delete(first)
    return true
  }

  override clear(): void {
    super.clear()
    this.byFirst.clear()
  }

  /** Keys whose first token is `first`. */
  keysFirst(first: string): Iterable<string> {
    return this.byFirst.get(first) ?? []
  }
}

const firstToken = (key: string): string => {
  const dot = key.indexOf('.')
  return dot === -1 ? key : key.slice(0, dot)
}

/** One bucket's state, shared by every bus on the hub (like a JetStream stream). */
export interface InProcessKvStore {
  name: string
  ttlMs: number | undefined
  /** Last revision handed out; revisions are per bucket, as stream sequences are. */
  seq: number
  entries: TokenIndexedEntries
  watchers: Set<Watcher>
  sweep: ReturnType<typeof setInterval> | undefined
  destroyed: boolean
  /** On disk in the embedded default (kv-journal.ts); absent in tests and on a bare hub. */
  journal: KvJournal | undefined
}

function toEntry(key: string, s: Stored): KvEntry {
  return { key, value: s.value.slice(), revision: s.revision, operation: s.operation }
}

/**
 * Open (or create) a bucket. Like `Kvm.create`, opening an existing bucket keeps its options.
 * `tracked` collects watch subscriptions so the owning bus can stop them on close.
 */
export function openInProcessKv(
  buckets: Map<string, InProcessKvStore>,
  prefix: string,
  bucket: string,
  { ttlMs }: KvOptions,
  tracked: Set<Subscription>,
  options: StoreOptions = {}
): KvBucket {
  const name = bucketName(prefix, bucket)
  const s = buckets.get(name) ?? createStore(buckets, name, ttlMs, options)
  const { log } = options
  return {
    name,
    async get(key) {
      validateKvKey(key)
      const e = live(usable(s), key)
      return e?.operation === 'PUT' ? toEntry(key, e) : null
    },
    async create(key, value) {
      const e = live(usable(s), key)
      if (e?.operation === 'PUT') throw new KvConflictError(name, key, 'key exists')
      // After a delete, create is a CAS on the delete marker, as in the NATS KV client.
      return write(s, log, key, value, 'PUT', e?.revision ?? 0)
    },
    async update(key, value, revision) {
      if (!(revision >= 1)) throw new ValidationError('revision must be a positive integer')
      return write(s, log, key, value, 'PUT', revision)
    },
    async put(key, value) {
      return write(s, log, key, value, 'PUT')
    },
    async delete(key) {
      write(s, log, key, new Uint8Array(0), 'DEL')
    },
    async erase(key, revision) {
      validateKvKey(key)
      const st = usable(s)
      const e = st.entries.get(key)
      if (e === undefined || (revision !== undefined && e.revision !== revision)) return
      st.entries.delete(key)
      // The revision field keeps the bucket's last revision in the file (erased keys may hold it).
      st.journal?.append('ERASE', key, st.seq, Date.now(), undefined, e.bytes)
    },
    async keys(filter = '>') {
      return liveKeys(s, filter)
    },
    async oldest(filter) {
      const first = liveEntries(s, filter)[0]
      return first ? { ...toEntry(first[0], first[1]), createdAt: first[1].at } : null
    },
    async watch(onEntry, watchOptions = {}) {
      return watchBucket(s, tracked, log, onEntry, watchOptions)
    },
    async destroy() {
      s.destroyed = true
      clearInterval(s.sweep)
      s.journal?.remove()
      for (const w of s.watchers) w.active = false
      s.watchers.clear()
      if (buckets.get(name) === s) buckets.delete(name)
    },
  }
}

interface StoreOptions {
  log?: BusLogger | undefined
  /** Keep the bucket in a journal in this folder, so it outlives the process. */
  dataDir?: string | undefined
  /** The journal's rewrite threshold (kv-journal.ts); tests lower it. */
  rewriteAtBytes?: number | undefined
  /** The journal's record bound (kv-journal.ts). */
  maxRecordBytes?: number | undefined
  /** The journal's read size at open; tests lower it. */
  readChunkBytes?: number | undefined
}

/** A new bucket on the hub: replayed from its journal when it has one, swept when it has a TTL. */
function createStore(
  buckets: Map<string, InProcessKvStore>,
  name: string,
  ttlMs: number | undefined,
  { log, dataDir, rewriteAtBytes, maxRecordBytes, readChunkBytes }: StoreOptions
): InProcessKvStore {
  const store: InProcessKvStore = {
    name,
    ttlMs,
    seq: 0,
    entries: new TokenIndexedEntries(),
    watchers: new Set(),
    sweep: undefined,
    destroyed: false,
    journal: undefined,
  }
  if (dataDir !== undefined) {
    const opened = openKvJournal({
      dir: dataDir,
      name,
      ttlMs,
      live: () => ({ entries: store.entries, seq: store.seq }),
      ...(log ? { log } : {}),
      ...(rewriteAtBytes === undefined ? {} : { rewriteAtBytes }),
      ...(maxRecordBytes === undefined ? {} : { maxRecordBytes }),
      ...(readChunkBytes === undefined ? {} : { readChunkBytes }),
    })
    store.entries = TokenIndexedEntries.of(opened.entries)
    store.seq = opened.seq
    store.journal = opened.journal
  }
  if (ttlMs) {
    // Expiry is lazy (see `live`); the sweep only frees memory, so it must not hold the process.
    store.sweep = setInterval(() => {
      for (const key of store.entries.keys()) live(store, key)
    }, ttlMs)
    ;(store.sweep as { unref?: () => void }).unref?.()
  }
  buckets.set(name, store)
  return store
}

/** The bucket, unless it was destroyed. */
function usable(s: InProcessKvStore): InProcessKvStore {
  if (s.destroyed) throw new NotFoundError('KV bucket', s.name)
  return s
}

/** The stored entry, unless the bucket TTL has passed; expiry emits no watch event (NATS 2.9). */
function live(st: InProcessKvStore, key: string): Stored | undefined {
  const e = st.entries.get(key)
  if (e && expired(e, st.ttlMs, Date.now())) {
    st.entries.delete(key)
    return undefined
  }
  return e
}

/** Append a write; `expect` is the CAS revision (0 = key must have no message). */
function write(
  s: InProcessKvStore,
  log: BusLogger | undefined,
  key: string,
  value: Uint8Array,
  operation: Stored['operation'],
  expect?: number
): number {
  const st = usable(s)
  validateKvKey(key)
  const previous = live(st, key)
  const current = previous?.revision ?? 0
  if (expect !== undefined && expect !== current) {
    throw new KvConflictError(st.name, key, `wrong last revision: ${current}, expected ${expect}`)
  }
  const stored: Stored = { value: value.slice(), revision: ++st.seq, operation, at: Date.now() }
  if (st.journal) {
    stored.bytes = st.journal.append(
      operation,
      key,
      stored.revision,
      stored.at,
      stored.value,
      previous?.bytes,
      previous === undefined
    )
  }
  st.entries.set(key, stored)
  // Split only for watchers: a queue entry's key split on each write was 1.5 % of the co-located
  // bridge path's CPU, and the queue bucket has none.
  if (st.watchers.size > 0) notifyWatchers(st, log, key, stored)
  return stored.revision
}

/** A write's entry to each watcher of a matching filter, after the writer's turn. */
function notifyWatchers(st: InProcessKvStore, log: BusLogger | undefined, key: string, s: Stored) {
  const tokens = key.split('.')
  for (const w of st.watchers) {
    if (!subjectMatches(w.tokens, tokens)) continue
    const entry = toEntry(key, s)
    queueMicrotask(() => w.active && callSafely(log, `${st.name}.${key}`, () => w.onEntry(entry)))
  }
}

/** Live PUT entries matching `filter`, oldest revision first. */
function liveEntries(s: InProcessKvStore, filter: string): Array<[string, Stored]> {
  validateKvKey(filter, { wildcards: true })
  const tokens = filter.split('.')
  const st = usable(s)
  // A literal first token visits only its keys (a session's queue among every session's).
  const first = tokens[0]!
  const candidates =
    first === '*' || first === '>' ? [...st.entries.keys()] : [...st.entries.keysFirst(first)]
  return candidates
    .map((k): [string, Stored | undefined] => [k, live(st, k)])
    .filter(
      (p): p is [string, Stored] =>
        p[1]?.operation === 'PUT' && subjectMatches(tokens, p[0].split('.'))
    )
    .sort((a, b) => a[1].revision - b[1].revision)
}

/**
 * Live PUT keys matching `filter`, in no set order (as NATS's `keys()` promises none). A session
 * queue's listing (`<client>.>`) visits only its own keys and splits none: a gateway recounts a
 * full queue of 10,000 every second, and the general path took ~20 ms of the loop for it.
 */
function liveKeys(s: InProcessKvStore, filter: string): string[] {
  validateKvKey(filter, { wildcards: true })
  const st = usable(s)
  const first = firstToken(filter)
  if (filter !== `${first}.>` || first === '*' || first === '>')
    return liveEntries(s, filter).map(([k]) => k)
  const out: string[] = []
  const now = Date.now()
  for (const k of st.entries.keysFirst(first)) {
    const e = st.entries.get(k)!
    // Expired entries are skipped here and freed by the sweep: no Map writes while listing.
    if (k.length > first.length && e.operation === 'PUT' && !expired(e, st.ttlMs, now)) out.push(k)
  }
  return out
}

function watchBucket(
  s: InProcessKvStore,
  tracked: Set<Subscription>,
  log: BusLogger | undefined,
  onEntry: (entry: KvEntry) => void,
  { key = '>', includeCurrent = true }: KvWatchOptions
): Subscription {
  const w: Watcher = { tokens: key.split('.'), active: true, onEntry }
  // Queued before any later write's notification, so history comes first and in order.
  for (const [k, e] of includeCurrent
    ? liveEntries(s, key)
    : (validateKvKey(key, { wildcards: true }), [])) {
    const entry = toEntry(k, e)
    queueMicrotask(() => w.active && callSafely(log, `${s.name}.${k}`, () => onEntry(entry)))
  }
  usable(s).watchers.add(w)
  const sub: Subscription = {
    async unsubscribe() {
      w.active = false
      s.watchers.delete(w)
      tracked.delete(sub)
    },
  }
  tracked.add(sub)
  return sub
}
