/**
 * Files do not pile up (thin-edge.io's users delete them by hand): each has an expiry, swept
 * every `sweepMs`, and a file a te/ command pointed at (its `tedgeUrl`) is removed
 * `commandCleanupMs` after the command ended, successful or failed. The gateways say when a
 * command ends (`COMMAND_ENDED_SUBJECT`); one replica of this service takes each (queue group).
 */
import { decodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import { COMMAND_ENDED_SUBJECT, type CommandEnded } from '../contracts/files.ts'
import { isPathProblem, parseFilePath } from '../contracts/file-paths.ts'
import type { FileMetrics } from './metrics.ts'
import { isExpired, type FileStore } from './store.ts'

/** Removals waiting for their time; past it the oldest is done at once (counted). */
export const MAX_SCHEDULED = 10_000

export interface UpkeepOptions {
  bus: Bus
  files: FileStore
  metrics: FileMetrics
  log: Logger
  sweepMs: number
  commandCleanupMs: number
}

export async function startUpkeep(o: UpkeepOptions): Promise<{ close(): Promise<void> }> {
  const { files, metrics, log } = o
  const remove = (name: string, why: 'expired' | 'command') =>
    files
      .remove(name, why)
      .then((removed) => removed && metrics.deleted.inc({ why }))
      .catch((err: unknown) => log.warn({ err, name }, 'could not remove a file'))

  let sweeping = false
  const sweep = async () => {
    if (sweeping) return
    sweeping = true
    try {
      const now = Date.now()
      for (const info of await files.bucket.list())
        if (isExpired(info, now)) await remove(info.name, 'expired')
      await files.usage.refresh()
      const totals = files.usage.totals()
      metrics.storedFiles.set(totals.files)
      metrics.storedBytes.set(totals.bytes)
    } catch (err) {
      log.warn({ err }, 'file expiry sweep failed; tried again next time')
    } finally {
      sweeping = false
    }
  }
  const sweeper = o.sweepMs > 0 ? setInterval(() => void sweep(), o.sweepMs) : undefined
  sweeper?.unref()

  const scheduled = new Map<string, NodeJS.Timeout>()
  const schedule = (name: string) => {
    clearTimeout(scheduled.get(name))
    scheduled.delete(name)
    if (scheduled.size >= MAX_SCHEDULED) {
      const [oldest, timer] = scheduled.entries().next().value as [string, NodeJS.Timeout]
      clearTimeout(timer)
      scheduled.delete(oldest)
      void remove(oldest, 'command')
    }
    const timer = setTimeout(() => {
      scheduled.delete(name)
      void remove(name, 'command')
    }, o.commandCleanupMs)
    timer.unref()
    scheduled.set(name, timer)
  }
  let sub: Subscription | undefined
  if (o.commandCleanupMs > 0) {
    sub = await o.bus.subscribe(
      COMMAND_ENDED_SUBJECT,
      (msg) => {
        const name = fileOfUrl(decodeJson<CommandEnded>(msg.data).tedgeUrl)
        if (name !== null) schedule(name)
      },
      { queue: 'files' }
    )
  }
  return {
    async close() {
      clearInterval(sweeper)
      for (const timer of scheduled.values()) clearTimeout(timer)
      scheduled.clear()
      await sub?.unsubscribe()
    },
  }
}

/** The file a tedgeUrl names in a file service (ours, by its path), or null. */
export function fileOfUrl(tedgeUrl: unknown): string | null {
  if (typeof tedgeUrl !== 'string') return null
  let path: string
  try {
    path = new URL(tedgeUrl).pathname
  } catch {
    return null
  }
  const name = parseFilePath(path)
  return isPathProblem(name) ? null : name
}
