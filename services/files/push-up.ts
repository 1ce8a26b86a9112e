/**
 * What devices upload on the edge (configuration snapshots, logs) under the source of a binding
 * going out (`out`, `both`) of an Active upstream is copied to that upstream's file service at
 * the binding's target path, after the edge has answered the device: the WAN never holds up a
 * device. The edge pushes because the upstream cannot reach it (NAT). Each copy is tried again
 * with a growing wait when the upstream fails, and dropped (counted) after MAX_ATTEMPTS.
 */
import type { BlobBucket } from '../common/bus/blobs.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import { putRemote } from './remote-file.ts'
import { EXPIRES_AT } from './store.ts'
import { remoteFileOf, upstreamPaths } from './upstream-files.ts'

/** Copies waiting, and copies waiting to be tried again, each; past it one is dropped (counted). */
export const MAX_WAITING = 1_000
export const MAX_ATTEMPTS = 8
const FIRST_RETRY_MS = 1_000
const MAX_RETRY_MS = 60_000

export interface PushUp {
  /** `name` was stored here: copy it to every upstream a binding going out maps it to. */
  stored(name: string): void
  /** Settles when nothing is waiting or being copied (tests). */
  idle(): Promise<void>
  close(): void
}

export interface PushUpOptions {
  store: StoreClient
  bucket: BlobBucket
  instanceId: string
  log: Logger
  onResult: (result: 'copied' | 'failed' | 'dropped', bytes: number) => void
}

interface Job {
  name: string
  attempt: number
}

export function createPushUp(o: PushUpOptions): PushUp {
  const waiting = new Map<string, Job>()
  let running = false
  let closed = false
  let timer: NodeJS.Timeout | undefined
  const idlers: Array<() => void> = []

  async function copy(name: string): Promise<void> {
    const upstreams = await o.store.call('upstream.list', { status: 'Active' })
    for (const { upstream, path } of upstreamPaths(upstreams, name, 'out')) {
      const read = await o.bucket.read(name)
      if (!read) return // deleted meanwhile: nothing to copy
      const expiresAt = Number(read.info.meta[EXPIRES_AT])
      const ttlSeconds = Number.isFinite(expiresAt)
        ? Math.max(1, Math.ceil((expiresAt - Date.now()) / 1_000))
        : undefined
      await putRemote(await remoteFileOf(o.store, o.instanceId, upstream, path), read.body, {
        size: read.info.size,
        sha256: read.info.sha256,
        ...(ttlSeconds ? { ttlSeconds } : {}),
      })
      o.onResult('copied', read.info.size)
      o.log.info({ name, upstreamId: upstream.id, path }, 'file copied to the upstream')
    }
  }

  async function drain(): Promise<void> {
    if (running) return
    running = true
    try {
      for (const job of waiting.values()) {
        if (closed) return
        waiting.delete(job.name)
        try {
          await copy(job.name)
        } catch (err) {
          o.onResult('failed', 0)
          if (job.attempt + 1 >= MAX_ATTEMPTS || closed) {
            o.onResult('dropped', 0)
            o.log.warn({ err, name: job.name }, 'could not copy a file to its upstream; gave up')
            continue
          }
          const wait = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** job.attempt)
          o.log.warn({ err, name: job.name, retryInMs: wait }, 'could not copy a file upstream')
          retryLater({ name: job.name, attempt: job.attempt + 1 }, wait)
        }
      }
    } finally {
      running = false
      if (waiting.size === 0 && !timer) for (const done of idlers.splice(0)) done()
    }
  }

  const retries = new Set<NodeJS.Timeout>()
  function retryLater(job: Job, wait: number) {
    // Copies waiting to be tried again are bounded like those waiting for their first try.
    if (retries.size >= MAX_WAITING) return o.onResult('dropped', 0)
    const t = setTimeout(() => {
      retries.delete(t)
      enqueue(job)
    }, wait)
    t.unref()
    retries.add(t)
  }

  function enqueue(job: Job) {
    if (closed) return
    waiting.delete(job.name) // a newer version: the latest is copied, once
    if (waiting.size >= MAX_WAITING) {
      const oldest = waiting.keys().next().value as string
      waiting.delete(oldest)
      o.onResult('dropped', 0)
    }
    waiting.set(job.name, job)
    clearTimeout(timer)
    timer = setTimeout(() => {
      timer = undefined
      void drain()
    }, 0)
  }

  return {
    stored: (name) => enqueue({ name, attempt: 0 }),
    idle: () =>
      waiting.size === 0 && !running && !timer
        ? Promise.resolve()
        : new Promise<void>((r) => idlers.push(r)),
    close() {
      closed = true
      clearTimeout(timer)
      for (const t of retries) clearTimeout(t)
      waiting.clear()
    },
  }
}
