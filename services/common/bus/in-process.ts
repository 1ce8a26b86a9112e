import { join } from 'node:path'
import { openFolderBlobs, temporaryBlobRoot } from './in-process-blobs.ts'
import {
  bucketName,
  answerRequest,
  callSafely,
  checkOpen,
  DEFAULT_REQUEST_TIMEOUT_MS,
  validateSubject,
  type Bus,
  type BusLogger,
  type Subscription,
} from './bus.ts'
import {
  addSubscription,
  createInProcessHub,
  createReachesBeyond,
  removeSubscriptions,
  requestOnHub,
  route,
  type InProcessHub,
  type InProcessSub,
} from './in-process-hub.ts'
import { openInProcessKv } from './in-process-kv.ts'

export { createInProcessHub, type InProcessHub } from './in-process-hub.ts'

export interface InProcessBusOptions {
  prefix?: string
  /** Share one hub between buses to model several processes on one server. */
  hub?: InProcessHub
  log?: BusLogger
  /**
   * Keep KV buckets on disk in this folder (the embedded default), so retained messages,
   * persistent sessions and their queues outlive the process as they outlive a restart on NATS.
   */
  dataDir?: string
  /** Rewrite a bucket's file past this many bytes when mostly dead (default 64 MiB); for tests. */
  journalRewriteBytes?: number
  /** A journal record larger than this is refused on write and damage on read (default 512 MiB). */
  journalMaxRecordBytes?: number
  /** Read a journal this many bytes at a time when a bucket opens; tests lower it. */
  journalReadChunkBytes?: number
}

/**
 * In-process bus for the embedded default. Delivery is asynchronous (a microtask per message, so
 * per-publisher order holds) and every receiver gets its own copy of the payload.
 */
export function createInProcessBus({
  prefix = 'ub',
  hub,
  log,
  dataDir,
  journalRewriteBytes,
  journalMaxRecordBytes,
  journalReadChunkBytes,
}: InProcessBusOptions = {}): Bus {
  validateSubject(prefix)
  const ownsHub = hub === undefined
  const world = hub ?? createInProcessHub()
  const mine = new Set<InProcessSub>()
  const watches = new Set<Subscription>()
  const heardBeyond = createReachesBeyond(world, prefix)
  let closed = false

  function add(
    subject: string,
    queue: string | undefined,
    deliver: InProcessSub['deliver']
  ): Subscription {
    checkOpen(closed)
    return addSubscription(world, mine, prefix, subject, queue, deliver)
  }

  const bus: Bus = {
    prefix,
    kind: 'in-process',
    publish(subject, data, headers) {
      checkOpen(closed)
      validateSubject(subject)
      route(world, prefix, subject, data, headers)
    },
    async subscribe(subject, handler, { queue } = {}) {
      return add(subject, queue, (msg) => callSafely(log, msg.subject, () => handler(msg)))
    },
    request(subject, data, { timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS, headers } = {}) {
      checkOpen(closed)
      validateSubject(subject)
      return requestOnHub(world, prefix, subject, data, timeoutMs, headers)
    },
    async serve(subject, handler, { queue } = {}) {
      return add(subject, queue, (msg, reply) => {
        void answerRequest(handler, msg, log).then((r) => reply?.({ subject, ...r }))
      })
    },
    reachesBeyond(subject, own) {
      return !closed && heardBeyond(subject, own)
    },
    async kv(bucket, options = {}) {
      checkOpen(closed)
      return openInProcessKv(world.buckets, prefix, bucket, options, watches, {
        log,
        dataDir,
        rewriteAtBytes: journalRewriteBytes,
        maxRecordBytes: journalMaxRecordBytes,
        readChunkBytes: journalReadChunkBytes,
      })
    },
    async blobs(bucket) {
      checkOpen(closed)
      const root = dataDir ? join(dataDir, 'blobs') : await hubBlobRoot(world)
      return openFolderBlobs(root, bucketName(prefix, bucket))
    },
    async flush() {
      // Everything published so far is already queued as microtasks ahead of this one.
      await new Promise<void>((resolve) => queueMicrotask(resolve))
    },
    async close() {
      if (closed) return
      closed = true
      removeSubscriptions(world, mine)
      await Promise.all([...watches].map((w) => w.unsubscribe()))
      if (ownsHub) closeBuckets(world)
      if (ownsHub) await removeHubBlobRoot(world)
    },
    [Symbol.asyncDispose]() {
      return bus.close()
    },
  }
  return bus
}

/** Stop a hub's bucket sweeps and write out their journals (the bus that made the hub closes). */
function closeBuckets(hub: InProcessHub): void {
  for (const b of hub.buckets.values()) {
    clearInterval(b.sweep)
    b.journal?.close()
  }
}

// Without a data folder (tests), a hub's blobs live in a temporary folder its buses share, removed
// when the bus that made the hub closes.
const hubBlobRoots = new WeakMap<InProcessHub, ReturnType<typeof temporaryBlobRoot>>()

async function hubBlobRoot(hub: InProcessHub): Promise<string> {
  let root = hubBlobRoots.get(hub)
  if (!root) hubBlobRoots.set(hub, (root = temporaryBlobRoot()))
  return (await root).root
}

async function removeHubBlobRoot(hub: InProcessHub): Promise<void> {
  const root = hubBlobRoots.get(hub)
  hubBlobRoots.delete(hub)
  if (root) await (await root).remove()
}
