import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { api, startInstance, type Instance } from '../helpers/instance.ts'
import { until } from '../helpers/bridging.ts'

/**
 * The downstream learns it was accepted, and later revoked, from a status request that waits at
 * the upstream server (a long poll it opens itself, as an edge behind NAT can): the regular polls
 * are a minute apart here, so only the wait can bring the news in seconds.
 */
describe('approval without waiting for a poll', () => {
  let up: Instance
  let down: Instance
  beforeAll(async () => {
    ;[up, down] = await Promise.all([
      startInstance(),
      startInstance({
        args: ['--handshake-poll-ms', '60000', '--handshake-slow-poll-ms', '60000'],
      }),
    ])
  }, 90_000)
  afterAll(async () => {
    await Promise.all([up?.stop(), down?.stop()])
  })

  it('shows Approved, then Revoked, on the downstream within seconds of the operator deciding', async () => {
    const created = await api(down, 'POST', '/api/v1/upstreams', {
      host: 'mqtt://127.0.0.1',
      brokerPort: Number(new URL(up.mqttUrl!).port),
      httpPort: Number(new URL(up.httpUrl).port),
    })
    const request = await until('the request on the upstream', async () =>
      (
        (await api(up, 'GET', '/api/v1/requests?status=Pending')) as Array<{
          id: string
          instanceId: string
        }>
      ).find((r) => r.instanceId === down.instanceId)
    )
    // Let the first regular poll pass: from now on only a long poll can see the decision soon.
    await new Promise((r) => setTimeout(r, 2_000))
    const status = async () =>
      (await api(down, 'GET', `/api/v1/upstreams/${created.id}`)).status as string
    expect(await status()).toBe('Pending')

    const accepted = Date.now()
    await api(up, 'POST', `/api/v1/requests/${request.id}/accept`, {})
    await until(
      'Approved',
      async () => ((await status()) === 'Approved' ? true : undefined),
      15_000
    )
    const approvedMs = Date.now() - accepted

    const revoked = Date.now()
    await api(up, 'POST', `/api/v1/requests/${request.id}/revoke`)
    await until('Revoked', async () => ((await status()) === 'Revoked' ? true : undefined), 15_000)
    const revokedMs = Date.now() - revoked
    console.log(
      `approval wait: Accept → Approved ${approvedMs} ms, revoke → Revoked ${revokedMs} ms`
    )
  }, 60_000)
})
