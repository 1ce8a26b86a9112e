import { Hono } from 'hono'
import type { Registry } from 'prom-client'
import { requireOperator } from './operator-auth.ts'

export interface OpsRoutesOptions {
  /** Liveness: the process serves HTTP. Readiness: its services finished starting and can reach their peers. */
  ready: () => Promise<{ ok: boolean; checks: Record<string, boolean> }>
  metrics: Registry
  /**
   * Checks an operator token for `/metrics` (processes without the handshake API, whose own
   * middleware guards it otherwise). Absent: the caller guards the routes itself.
   */
  verifyToken?: (token: string) => Promise<boolean>
}

/** `/healthz`, `/readyz` and `/metrics`: served by every process, whatever services it runs. */
export function createOpsRoutes({ ready, metrics, verifyToken }: OpsRoutesOptions): Hono {
  const app = new Hono()
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', async (c) => {
    const { ok, checks } = await ready()
    return c.json({ status: ok ? 'ready' : 'not_ready', checks }, ok ? 200 : 503)
  })
  if (verifyToken) app.use('/metrics', requireOperator({ verifyToken }))
  app.get('/metrics', async (c) => {
    c.header('Content-Type', metrics.contentType)
    return c.body(await metrics.metrics())
  })
  return app
}
