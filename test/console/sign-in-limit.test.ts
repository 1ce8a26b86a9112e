import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startInstance, type Instance } from '../helpers/instance.ts'
import { launchChromium, openPage, screenshot, textOf } from './browser.ts'

/**
 * The console's sign-in has a budget of failed attempts per source (10 a minute): the 11th
 * attempt from one source is 429 `rate_limited` with Retry-After, even with the right token,
 * while another source signs in. One real instance behind a "proxy" (trustProxy: the last
 * X-Forwarded-For entry is the source), driven with fetch; the browser shows the message.
 */
let inst: Instance
beforeAll(async () => {
  inst = await startInstance({ args: ['--trust-proxy', 'true'] })
})
afterAll(async () => {
  await inst?.stop()
})

const signInFrom = (source: string, token: string) =>
  fetch(inst.httpUrl + '/console/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': source },
    body: JSON.stringify({ token }),
  })

describe('console sign-in rate limit', () => {
  it('answers the 11th failed attempt from a source with 429; another source still signs in', async () => {
    for (let i = 0; i < 10; i++) {
      const res = await signInFrom('203.0.113.7', 'wrong-' + i)
      expect(res.status).toBe(401)
      expect(((await res.json()) as any).error.code).toBe('unauthorized')
    }
    // A forged entry before the proxy's own does not make it another source.
    const limited = await signInFrom('192.0.2.1, 203.0.113.7', inst.adminToken)
    expect(limited.status).toBe(429)
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(await limited.json()).toEqual({
      error: { code: 'rate_limited', message: expect.stringMatching(/too many failed sign-ins/) },
    })
    expect(limited.headers.get('set-cookie')).toBeNull()

    const other = await signInFrom('203.0.113.8', inst.adminToken)
    expect(other.status).toBe(200)
    expect(other.headers.get('set-cookie')).toMatch(/^ub_console_/)

    const metrics = await fetch(inst.httpUrl + '/metrics', {
      headers: { authorization: `Bearer ${inst.adminToken}` },
    }).then((r) => r.text())
    expect(metrics).toMatch(/^ub_console_sign_in_limited_total 1$/m)
    expect(metrics).toMatch(/^ub_console_sign_in_sources 2$/m)
    expect(metrics).toMatch(/^ub_console_sessions_total\{event="refused"\} 10$/m)
  })

  it('shows the 429 in the sign-in form', async () => {
    const browser = await launchChromium()
    try {
      const { page, context, problems } = await openPage(browser)
      await context.setExtraHTTPHeaders({ 'x-forwarded-for': '203.0.113.9' })
      await page.goto(inst.httpUrl + '/console/')
      await page.getByLabel('Admin token').fill(inst.adminToken)
      // Spent just before the click, the form already filled: a token comes back every 6 s, and
      // on a loaded CI machine spending it before filling the form left time for one (the right
      // token then signed in and the test waited 30 s for a message that never came).
      for (let i = 0; i < 10; i++)
        expect((await signInFrom('203.0.113.9', 'wrong-' + i)).status).toBe(401)
      expect((await signInFrom('203.0.113.9', 'wrong-last')).status).toBe(429)
      await page.getByRole('button', { name: 'Sign in' }).click()
      const text = await textOf(
        page.locator('#login-error'),
        /Too many attempts: too many failed sign-ins .*\(429 rate_limited\)/
      )
      expect(text).not.toMatch(/\n\s+at /)
      await screenshot(page, 'sign-in-rate-limited')
      expect(problems).toEqual([])
    } finally {
      await browser.close()
    }
  })
})
