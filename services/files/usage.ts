/**
 * What the stored files take, to enforce the bounds before and while a PUT streams: the total,
 * each configured namespace's quota and the number of files. Known from a listing of the bucket,
 * kept up to date by this replica's own writes and re-counted every `refreshMs` to see the
 * other replicas'. Uploads in progress count with the bytes they have so far, so two at once
 * cannot each take the whole room (replicas still may, between re-counts: a bound, not a lock).
 */
import { isWithin } from '../../machines/namespace.ts'
import type { BlobBucket } from '../common/bus/blobs.ts'
import type { Logger } from '../common/log.ts'

export interface UsageLimits {
  maxFileBytes: number
  maxTotalBytes: number
  /** namespace → bytes. */
  quotas: Record<string, number>
  maxFiles: number
}

/** How many bytes a PUT to a name may write, and which bound says so. */
export interface Room {
  bytes: number
  limitedBy: 'file' | 'total' | 'namespace' | 'count'
  namespace?: string
}

export interface Usage {
  refresh(): Promise<void>
  room(name: string): Room
  /** 'parent_is_file' when a level above `name` is a file; 'is_directory' when files lie under it. */
  conflict(name: string): 'parent_is_file' | 'is_directory' | null
  /** An upload begins: its bytes so far count against the room of others. */
  begin(name: string): { add(bytes: number): void; end(): void }
  stored(name: string, size: number): void
  removed(name: string): void
  totals(): { files: number; bytes: number }
  close(): void
}

export function createUsage(
  bucket: BlobBucket,
  limits: UsageLimits,
  { refreshMs, log }: { refreshMs: number; log: Logger }
): Usage {
  let sizes = new Map<string, number>()
  const uploads = new Set<{ name: string; bytes: number }>()
  const quotaNamespaces = Object.keys(limits.quotas).sort((a, b) => b.length - a.length)

  const bytesWhere = (within: (name: string) => boolean, except: string): number => {
    let sum = 0
    for (const [name, size] of sizes) if (name !== except && within(name)) sum += size
    for (const u of uploads) if (within(u.name)) sum += u.bytes
    return sum
  }

  const usage: Usage = {
    async refresh() {
      const listed = await bucket.list()
      sizes = new Map(listed.map((b) => [b.name, b.size]))
    },
    room(name) {
      // Overwriting a file frees its old bytes: they do not count against the new version.
      if (!sizes.has(name) && sizes.size + uploads.size >= limits.maxFiles)
        return { bytes: 0, limitedBy: 'count' }
      let room: Room = { bytes: limits.maxFileBytes, limitedBy: 'file' }
      const total = limits.maxTotalBytes - bytesWhere(() => true, name)
      if (total < room.bytes) room = { bytes: Math.max(0, total), limitedBy: 'total' }
      const namespace = quotaNamespaces.find((ns) => isWithin(name, ns))
      if (namespace !== undefined) {
        const left = limits.quotas[namespace]! - bytesWhere((n) => isWithin(n, namespace), name)
        if (left < room.bytes)
          room = { bytes: Math.max(0, left), limitedBy: 'namespace', namespace }
      }
      return room
    },
    conflict(name) {
      const levels = name.split('/')
      for (let i = 1; i < levels.length; i++)
        if (sizes.has(levels.slice(0, i).join('/'))) return 'parent_is_file'
      const below = name + '/'
      for (const other of sizes.keys()) if (other.startsWith(below)) return 'is_directory'
      return null
    },
    begin(name) {
      const upload = { name, bytes: 0 }
      uploads.add(upload)
      return {
        add: (bytes) => void (upload.bytes += bytes),
        end: () => void uploads.delete(upload),
      }
    },
    stored: (name, size) => void sizes.set(name, size),
    removed: (name) => void sizes.delete(name),
    totals() {
      let bytes = 0
      for (const size of sizes.values()) bytes += size
      return { files: sizes.size, bytes }
    },
    close: () => clearInterval(timer),
  }
  const timer = setInterval(() => {
    usage.refresh().catch((err: unknown) => log.warn({ err }, 'could not re-count stored files'))
  }, refreshMs || 30_000)
  timer.unref()
  return usage
}
