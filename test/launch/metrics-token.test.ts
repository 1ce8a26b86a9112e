import { randomBytes } from 'node:crypto'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createOpsRoutes } from '../../services/common/ops-routes.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'

/** Config `metricsToken`: Prometheus scrapes `/metrics` with it; it opens nothing else. */
const metricsToken = 'ubm_test_' + randomBytes(12).toString('hex')
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

describe('metricsToken on a process with the handshake API', () => {
  let inst: Instance
  beforeAll(async () => {
    inst = await startInstance({ env: { UB_METRICS_TOKEN: metricsToken } })
  })
  afterAll(async () => {
    await inst?.stop()
  })
  const status = async (path: string, headers: Record<string, string> = {}) =>
    (await inst.fetch(inst.httpUrl + path, { headers })).status

  it('opens /metrics, as the admin token does', async () => {
    const res = await inst.fetch(inst.httpUrl + '/metrics', { headers: bearer(metricsToken) })
    expect(res.status).toBe(200)
    expect(await res.text()).toContain('process_cpu_user_seconds_total')
    expect(await status('/metrics', bearer(inst.adminToken))).toBe(200)
  })

  it('opens nothing else, and a wrong or missing token still gets 401', async () => {
    for (const path of ['/api/v1/instance', '/openapi.json', '/api/v1/upstreams']) {
      expect(await status(path, bearer(metricsToken)), path).toBe(401)
    }
    expect(await status('/metrics', bearer(metricsToken + 'x'))).toBe(401)
    expect(await status('/metrics')).toBe(401)
  })
})

describe('metricsToken on a process without it (ops routes only)', () => {
  const admin = 'ubt_admin_' + randomBytes(12).toString('hex')
  const ops = (token?: string) =>
    createOpsRoutes({
      ready: async () => ({ ok: true, checks: {} }),
      metrics: new Registry(),
      verifyToken: async (t) => t === admin,
      ...(token ? { metricsToken: token } : {}),
    })
  const get = async (app: ReturnType<typeof ops>, token: string) =>
    (await app.request('/metrics', { headers: bearer(token) })).status

  it('accepts the metrics token or the admin token on /metrics', async () => {
    const app = ops(metricsToken)
    expect(await get(app, metricsToken)).toBe(200)
    expect(await get(app, admin)).toBe(200)
    expect(await get(app, 'nope-nope-nope-nope')).toBe(401)
  })

  it('accepts only the admin token when none is configured', async () => {
    expect(await get(ops(), metricsToken)).toBe(401)
    expect(await get(ops(), admin)).toBe(200)
  })
})
