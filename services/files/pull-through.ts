/**
 * The edge serves the upstream's files (thin-edge#2798: child devices otherwise fetch from the
 * internet themselves). A GET for a file this instance does not have, under the source of a
 * binding coming in (`in`, `both`) of an Active upstream, is fetched once from that upstream's
 * file service at the binding's target path — https when the upstream is TLS, as the downstream
 * (its instance id and handshake secret), so the upstream confines it to its grants — verified
 * by the SHA-256 its ETag names, resumed with Range after a cut, and kept until it expires. A
 * hundred devices asking at once share the one download.
 */
import { createHash } from 'node:crypto'
import type { BlobBucket } from '../common/bus/blobs.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { Upstream } from '../contracts/store.ts'
import { fetchResuming, type RemoteFile } from './remote-file.ts'
import { EXPIRES_AT } from './store.ts'
import { remoteFileOf, upstreamPaths } from './upstream-files.ts'

/** Downloads at once; past it a GET that needs one answers 503 (counted). */
export const MAX_PULLS = 16
const UPSTREAMS_CACHE_MS = 2_000

export interface PullThrough {
  /** Fetch `name` from the upstream a binding maps it to; true when it is now stored here. */
  fill(name: string): Promise<boolean>
}

export class PullBusy extends Error {}

export interface PullThroughOptions {
  store: StoreClient
  bucket: BlobBucket
  instanceId: string
  ttlMs: number
  maxBytes: number
  log: Logger
  onPulled?: (bytes: number) => void
  /** Tests: the fetch of one remote file (default over node:http/https). */
  fetchFile?: (file: RemoteFile) => AsyncIterable<Uint8Array> & { sha256(): string | undefined }
}

export function createPullThrough(o: PullThroughOptions): PullThrough {
  const inFlight = new Map<string, Promise<boolean>>()
  let upstreams: { at: number; list: Promise<Upstream[]> } | undefined
  const activeUpstreams = () => {
    if (!upstreams || Date.now() - upstreams.at > UPSTREAMS_CACHE_MS) {
      const list = o.store.call('upstream.list', { status: 'Active' })
      upstreams = { at: Date.now(), list }
      list.catch(() => (upstreams = undefined))
    }
    return upstreams.list
  }

  async function pull(name: string): Promise<boolean> {
    // Bindings coming in never share an upstream subtree: the first that covers it is the one.
    const source = upstreamPaths(await activeUpstreams(), name, 'in')[0]
    if (!source) return false
    const { upstream, path } = source
    const file = await remoteFileOf(o.store, o.instanceId, upstream, path)
    const body = (o.fetchFile ?? fetchResuming)(file)
    let bytes = 0
    try {
      const counted = (async function* () {
        for await (const chunk of body) {
          bytes += chunk.byteLength
          yield chunk
        }
      })()
      await o.bucket.put(name, verified(counted, body), {
        maxBytes: o.maxBytes,
        meta: {
          ...(o.ttlMs > 0 ? { [EXPIRES_AT]: String(Date.now() + o.ttlMs) } : {}),
          pulledFrom: upstream.id,
        },
      })
    } catch (err) {
      if ((err as { status?: number }).status === 404) return false
      throw err
    }
    o.onPulled?.(bytes)
    o.log.info({ name, upstreamId: upstream.id, path, bytes }, 'file fetched from the upstream')
    return true
  }

  return {
    fill(name) {
      const running = inFlight.get(name)
      if (running) return running
      if (inFlight.size >= MAX_PULLS)
        return Promise.reject(new PullBusy('too many downloads at once'))
      const started = pull(name).finally(() => inFlight.delete(name))
      inFlight.set(name, started)
      return started
    },
  }
}

/**
 * The content, then a check that it is what the upstream's ETag named: a mismatch throws before
 * the put completes, so nothing is kept (the blob bucket's all-or-nothing put).
 */
async function* verified(
  content: AsyncIterable<Uint8Array>,
  source: { sha256(): string | undefined }
): AsyncIterable<Uint8Array> {
  const hash = createHash('sha256')
  for await (const chunk of content) {
    hash.update(chunk)
    yield chunk
  }
  const expected = source.sha256()
  const actual = hash.digest('hex')
  if (expected !== undefined && expected !== actual)
    throw new Error(`the upstream's file has SHA-256 ${actual}, its ETag said ${expected}`)
}
