import { Hono, type Context } from 'hono'
import type { Registry } from 'prom-client'
import { sameSecret } from './digest.ts'
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
  /** Config `metricsToken`: a Bearer token that opens `/metrics` too, and nothing else. */
  metricsToken?: string
}

/**
 * The request presents config `metricsToken` (`Authorization: Bearer <metricsToken>`), compared
 * in constant time. False when none is configured: only the admin token opens `/metrics` then.
 */
export function presentsMetricsToken(c: Context, metricsToken: string | undefined): boolean {
  if (!metricsToken) return false
  const match = /^Bearer +(\S+) *$/i.exec(c.req.header('authorization') ?? '')
  return match ? sameSecret(match[1]!, metricsToken) : false
}

/** `/healthz`, `/readyz` and `/metrics`: served by every process, whatever services it runs. */
export function createOpsRoutes({
  ready,
  metrics,
  verifyToken,
  metricsToken,
}: OpsRoutesOptions): Hono {
  const app = new Hono()
  app.get('/healthz', (c) => c.json({ status: 'ok' }))
  app.get('/readyz', async (c) => {
    const { ok, checks } = await ready()
    return c.json({ status: ok ? 'ready' : 'not_ready', checks }, ok ? 200 : 503)
  })
  if (verifyToken) {
    const operator = requireOperator({ verifyToken })
    app.use('/metrics', (c, next) =>
      presentsMetricsToken(c, metricsToken) ? next() : operator(c, next)
    )
  }
  app.get('/metrics', async (c) => {
    c.header('Content-Type', metrics.contentType)
    return c.body(await metrics.metrics())
  })
  return app
}
