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
  /** Delete a file; true when there was one. */
  remove(name: string, why: 'request' | 'expired' | 'command'): Promise<boolean>
}

export function createFileStore(bucket: BlobBucket, usage: Usage): FileStore {
  return {
    bucket,
    usage,
    async remove(name) {
      const removed = await bucket.delete(name)
      usage.removed(name)
      return removed
    },
  }
}
