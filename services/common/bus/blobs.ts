/**
 * Blob buckets: named files of any size, streamed both ways, shared by every replica of a
 * service. NATS JetStream's Object Store in distributed mode (a file put through one replica is
 * read through any other and outlives a NATS node), a folder of the data directory in the
 * embedded default. Both pass one contract suite (test/contract/blobs.contract.ts).
 *
 * A put is all or nothing: readers see the previous version (or none) until the new one is
 * complete, and a put that fails (its source errors, it passes `maxBytes`, its digest does not
 * match) leaves the previous version as it was.
 */
import { UbError } from '../errors.ts'

export interface BlobInfo {
  /** The blob's name in its bucket (any UTF-8 text up to BLOB_NAME_MAX_BYTES). */
  name: string
  size: number
  /** SHA-256 of the content, lowercase hex. */
  sha256: string
  /** ms since the epoch: when this version was completed. */
  modifiedAt: number
  /** Small string metadata given to `put` (expiry, owner, content type). */
  meta: Record<string, string>
}

export interface BlobPutOptions {
  meta?: Record<string, string>
  /** Refuse content longer than this with BlobTooLargeError; nothing is kept. */
  maxBytes?: number
  /** Refuse content whose SHA-256 (hex) differs with BlobDigestError; nothing is kept. */
  expectSha256?: string
  /** Called as bytes arrive (for in-progress gauges); must not throw. */
  onBytes?: (bytes: number) => void
}

export interface BlobReadRange {
  /** First byte, inclusive (default 0). */
  start?: number
  /** Last byte, inclusive (default the last). */
  end?: number
}

export interface BlobBucket {
  readonly name: string
  put(name: string, content: AsyncIterable<Uint8Array>, options?: BlobPutOptions): Promise<BlobInfo>
  info(name: string): Promise<BlobInfo | null>
  /**
   * The blob's bytes within `range` (clamped to its size), or null when it is absent. The
   * stream reads as it is consumed (memory stays flat) and belongs to the version `info` was
   * taken from; abandoning it early (break, return) releases what it holds.
   */
  read(
    name: string,
    range?: BlobReadRange
  ): Promise<{ info: BlobInfo; body: AsyncIterable<Uint8Array> } | null>
  /** True when there was something to delete. */
  delete(name: string): Promise<boolean>
  /** Every blob's info (no content), in no particular order. */
  list(): Promise<BlobInfo[]>
  /** Remove the bucket and everything in it (tests and teardown). */
  destroy(): Promise<void>
}

export interface BlobBucketOptions {
  /** JetStream copies (NATS only; default the bus's `replicas`). */
  replicas?: number
}

/** Longest blob name, in UTF-8 bytes. */
export const BLOB_NAME_MAX_BYTES = 1_024

export class BlobTooLargeError extends UbError {
  constructor(maxBytes: number) {
    super('too_large', `the content is larger than ${maxBytes} bytes`, { details: { maxBytes } })
  }
}

export class BlobDigestError extends UbError {
  constructor(expected: string, actual: string) {
    super('digest_mismatch', `the content's SHA-256 is ${actual}, not ${expected}`, {
      details: { expected, actual },
    })
  }
}

export function validateBlobName(name: string): void {
  const bytes = Buffer.byteLength(name)
  if (bytes === 0 || bytes > BLOB_NAME_MAX_BYTES || name.includes('\0'))
    throw new UbError('invalid_name', `a blob name is 1 to ${BLOB_NAME_MAX_BYTES} bytes, no NUL`, {
      details: { name: name.slice(0, 64) },
    })
}
