/**
 * The file transfer service (thin-edge.io's `/te/v1/files`, README, File transfer): files in a
 * blob bucket every replica shares, reached over the handshake service's HTTP port, for the
 * gateway's principals within their grants.
 */
import type { Context, Hono } from 'hono'
import type { ServiceContext } from '../contracts/service.ts'
import { createPrincipalAuthenticator, watchGrantChanges } from '../gateway/index.ts'
import { createAccess } from './access.ts'
import { createFileMetrics } from './metrics.ts'
import { createPullThrough } from './pull-through.ts'
import { createPushUp } from './push-up.ts'
import { fileRoutes } from './routes.ts'
import { createFileStore, type FileStore } from './store.ts'
import { startUpkeep } from './upkeep.ts'
import { createUsage } from './usage.ts'

export { FILES_PREFIX, fileUrlPath, parseFilePath } from '../contracts/file-paths.ts'
export { COMMAND_ENDED_SUBJECT, type CommandEnded } from '../contracts/files.ts'
export type { FileStore } from './store.ts'

export const FILES_BUCKET = 'files'

export interface FilesService {
  routes: Hono
  store: FileStore
  close(): Promise<void>
}

export interface FilesOptions {
  /** sha-256 hex of the admin token: the operator may read and write every file. */
  adminTokenHash: string
  /** The TCP peer's address of a request (undefined when there is none, as in app.request). */
  socketAddress(c: Context): string | undefined
}

export async function startFiles(
  ctx: ServiceContext,
  { adminTokenHash, socketAddress }: FilesOptions
): Promise<FilesService> {
  const { config, bus } = ctx
  const log = ctx.log.child({ service: 'files' })
  const bucket = await bus.blobs(FILES_BUCKET)
  const usage = createUsage(
    bucket,
    {
      maxFileBytes: config.filesMaxFileBytes,
      maxTotalBytes: config.filesMaxTotalBytes,
      quotas: config.filesQuotas,
      maxFiles: config.filesMaxCount,
    },
    { refreshMs: config.filesUsageRefreshMs, log }
  )
  await usage.refresh()
  const store = createFileStore(bucket, usage)
  const metrics = createFileMetrics(ctx.metrics)
  const authenticator = createPrincipalAuthenticator({ ...ctx, log })
  const grants = await watchGrantChanges(bus, () => authenticator.grantsChanged())
  const upkeep = await startUpkeep({
    bus,
    files: store,
    metrics,
    log,
    sweepMs: config.filesSweepMs,
    commandCleanupMs: config.filesCommandCleanupMs,
  })
  // Behind a proxy the client is the last X-Forwarded-For entry, and without one it is unknown:
  // never loopback, so never anonymous under the default policy (as for MQTT).
  const remoteAddress = (c: Context): string | undefined => {
    if (config.trustProxy) return c.req.header('x-forwarded-for')?.split(',').pop()?.trim()
    try {
      return socketAddress(c)
    } catch {
      return undefined
    }
  }
  const pull = createPullThrough({
    store: ctx.store,
    bucket,
    instanceId: ctx.instanceId,
    ttlMs: config.filesTtlMs,
    maxBytes: config.filesMaxFileBytes,
    log,
    onPulled: (bytes) => metrics.pulledBytes.inc(bytes),
  })
  const push = createPushUp({
    store: ctx.store,
    bucket,
    instanceId: ctx.instanceId,
    log,
    onResult: (result, bytes) => {
      metrics.pushed.inc({ result })
      if (bytes) metrics.pushedBytes.inc(bytes)
    },
  })
  const routes = fileRoutes({
    pull,
    push,
    files: store,
    metrics,
    callerOf: createAccess({ authenticator, adminTokenHash }),
    remoteAddress,
    ttlMs: config.filesTtlMs,
    maxTtlMs: config.filesMaxTtlMs,
  })
  let closing: Promise<void> | undefined
  return {
    routes,
    store,
    close: () =>
      (closing ??= (async () => {
        usage.close()
        push.close()
        await upkeep.close()
        await grants.unsubscribe()
      })()),
  }
}
