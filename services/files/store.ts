/**
 * The files and what is known about them: the blob bucket (NATS Object Store or the data
 * folder), the usage counts the bounds need, and removal that keeps both in step.
 */
import type { BlobBucket, BlobInfo } from '../common/bus/blobs.ts'
import type { Usage } from './usage.ts'

/** Metadata key: ms since the epoch after which the file is gone. */
export const EXPIRES_AT = 'expiresAt'

export const isExpired = (info: BlobInfo, now = Date.now()): boolean => {
  const at = Number(info.meta[EXPIRES_AT])
  return Number.isFinite(at) && at <= now
}

export interface FileStore {
  bucket: BlobBucket
  usage: Usage
  /**
   * A level above `name` that is a file, asked of the bucket itself (every replica's writes),
   * or null. Files under `name` are known from the usage listing only (usage.ts).
   */
  fileAbove(name: string): Promise<string | null>
  /** Delete a file; true when there was one. */
  remove(name: string, why: 'request' | 'expired' | 'command'): Promise<boolean>
}

export function createFileStore(bucket: BlobBucket, usage: Usage): FileStore {
  return {
    bucket,
    usage,
    async fileAbove(name) {
      const levels = name.split('/')
      const parents = levels.slice(1).map((_, i) => levels.slice(0, i + 1).join('/'))
      const infos = await Promise.all(parents.map((p) => bucket.info(p)))
      const i = infos.findIndex((info) => info !== null && !isExpired(info))
      return i < 0 ? null : parents[i]!
    },
    async remove(name) {
      const removed = await bucket.delete(name)
      usage.removed(name)
      return removed
    },
  }
}
