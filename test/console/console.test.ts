import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { listen } from '../helpers/bridging.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'
import { cookieHeader, launchChromium, openPage, screenshot, signIn, textOf } from './browser.ts'

/**
 * The operator console in real headless Chromium against two real instances: A asks B for a
 * connection in the browser, B's operator accepts in another browser context, A's row turns
 * Approved by itself (SSE), A binds, activates, a message crosses, and so on to the machine
 * view; plus the session's security (HttpOnly cookie, CSRF, CSP, no token in the page).
 */
const POLL = ['--handshake-poll-ms', '100', '--handshake-slow-poll-ms', '400']
const NO_STACK = /^\s+at |\bError: .*\n\s+at /m

let a: Instance
let b: Instance
let browser: Browser
let pa: { context: BrowserContext; page: Page; problems: string[] }
let pb: { context: BrowserContext; page: Page; problems: string[] }
let headersA: Record<string, string>
let upstreamId = ''

beforeAll(async () => {
  browser = await launchChromium()
  ;[a, b] = await Promise.all([startInstance({ args: POLL }), startInstance({ args: POLL })])
  pa = await openPage(browser)
  pb = await openPage(browser)
})
afterAll(async () => {
  await browser?.close()
  await Promise.all([a?.stop(), b?.stop()])
})

const rowA = () => pa.page.locator(`tr[data-id="${upstreamId}"]`)
const statusA = () => rowA().locator('[data-field=status]')
const alertA = () => pa.page.locator('#page p.error[role=alert]').first()

describe('operator console', () => {
  it('signs in on A with security headers, an HttpOnly cookie and no token in the page', async () => {
    const { page, context } = pa
    // The banner says where the console is.
    expect(a.output()).toContain(`console  ${a.httpUrl}/console/`)
    await page.goto(a.httpUrl + '/console/')
    await screenshot(page, 'sign-in')
    headersA = await signIn(page, a)
    const csp = headersA['content-security-policy'] ?? ''
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("style-src 'self'")
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).not.toContain('unsafe-inline')
    expect(headersA['x-content-type-options']).toBe('nosniff')
    expect(headersA['referrer-policy']).toBe('no-referrer')
    await textOf(page.locator('#live'), /Live/)
    expect(await page.content()).not.toContain(a.adminToken)
    const cookie = (await context.cookies()).find((c) => c.name.startsWith('ub_console_'))
    expect(cookie?.httpOnly).toBe(true)
    expect(cookie?.sameSite).toBe('Strict')
    // The marker survives only if the page is never reloaded from here on.
    await page.evaluate('window.__noReload = 42')
  })

  it('shows a user error as a message, not a stack trace', async () => {
    const { page } = pa
    await page.getByLabel('Broker Host').fill('bad host!')
    await page.getByRole('button', { name: 'Request Connection' }).click()
    const form = page.locator('form[aria-labelledby=create-title] p.error')
    const text = await textOf(form, /Invalid input: .*host/i)
    expect(text).not.toMatch(NO_STACK)
  })

  it('creates an upstream pointing at B: the row shows Pending', async () => {
    const { page } = pa
    await page.getByLabel('Protocol').selectOption('mqtt://')
    await page.getByLabel('Broker Host').fill('127.0.0.1')
    await page.getByLabel('Broker Port').fill(new URL(b.mqttUrl!).port)
    await page.getByLabel('HTTP Port').fill(new URL(b.httpUrl).port)
    await page.getByRole('button', { name: 'Request Connection' }).click()
    const row = page.locator('tr[data-id]').first()
    await row.waitFor()
    upstreamId = (await row.getAttribute('data-id')) ?? ''
    expect(upstreamId).toMatch(/^up_/)
    await textOf(statusA(), /Pending/)
    await screenshot(page, 'upstreams-pending')
  })

  it("accepts on B; A's row turns Approved by itself", async () => {
    const { page } = pb
    await signIn(page, b)
    await page.getByRole('link', { name: 'Incoming Requests' }).click()
    const row = page.locator(`tr[data-instance="${a.instanceId}"]`)
    await textOf(row.locator('[data-field=status]'), /Pending/)
    await page.getByLabel(`Grants for ${a.instanceId}`).fill('acme')
    await screenshot(page, 'incoming-requests')
    const started = Date.now()
    await row.getByRole('button', { name: 'Accept' }).click()
    await textOf(row.locator('[data-field=status]'), /Accepted/)
    await textOf(row.locator('[data-field=grants]'), /acme/)
    await textOf(statusA(), /Approved/, 5_000)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(await pa.page.evaluate('window.__noReload')).toBe(42)
  })

  it('refuses to activate without a binding, with a readable 409', async () => {
    const toggle = rowA().getByRole('switch')
    await toggle.click()
    const text = await textOf(alertA(), /Refused: .*\(409 invalid_transition\)/)
    expect(text).not.toMatch(NO_STACK)
    await textOf(statusA(), /Approved/)
    expect(await toggle.isChecked()).toBe(false)
  })

  it('binds plant1 → acme/site1, activates, and a message crosses from A to B', async () => {
    const { page } = pa
    await rowA().getByRole('button', { name: 'Edit Upstream' }).click()
    await page.getByRole('button', { name: 'Add Binding' }).click()
    await page.getByLabel('Source namespace 1').fill('plant1')
    await page.getByLabel('Target namespace 1').fill('acme/site1')
    await page.getByLabel('Direction 1').selectOption('out')
    await page.getByRole('button', { name: 'Update', exact: true }).click()
    await textOf(rowA().locator('[data-field=bindings]'), /plant1 → acme\/site1 \(out\)/)
    await screenshot(page, 'edit-upstream')

    const sub = await listen(b.mqttUrl!, 'acme/site1/#')
    const pub = await connectMqtt(a.mqttUrl!)
    try {
      await rowA().getByRole('switch').click()
      await textOf(statusA(), /Active/)
      const deadline = Date.now() + 20_000
      while (!sub.got.some((m) => m.topic === 'acme/site1/line3/temp')) {
        if (Date.now() > deadline) throw new Error('the message did not cross the bridge')
        await pub.publishAsync('plant1/line3/temp', '21.5', { qos: 1 })
        await new Promise((r) => setTimeout(r, 300))
      }
      expect(sub.got.find((m) => m.topic === 'acme/site1/line3/temp')?.payload).toBe('21.5')
      // Link health is read again every few seconds: the bridge that carried it is Forwarding.
      await textOf(rowA().locator('[data-field=link]'), /Forwarding/, 8_000)
      // ... with its figures: the backlog read from the gateways (every 5 s) and the rate.
      await textOf(rowA().locator('[data-field=figures]'), /lag \d+ ms · backlog \d+/, 12_000)
      await screenshot(page, 'upstreams-active')
    } finally {
      await Promise.all([sub.client.endAsync(), pub.endAsync()])
    }
  })

  it('guards the session: CSRF on changes, the cookie works for GET and SSE', async () => {
    const cookie = cookieHeader(await pa.context.cookies())
    const url = `${a.httpUrl}/api/v1/upstreams/${upstreamId}/refresh`
    const noCsrf = await fetch(url, { method: 'POST', headers: { cookie } })
    expect(noCsrf.status).toBe(403)
    expect(((await noCsrf.json()) as any).error.code).toBe('csrf_required')
    const wrong = await fetch(url, { method: 'POST', headers: { cookie, 'x-csrf-token': 'x' } })
    expect(wrong.status).toBe(403)
    const session = (await (
      await fetch(`${a.httpUrl}/console/session`, { headers: { cookie } })
    ).json()) as { csrfToken: string }
    const ok = await fetch(url, {
      method: 'POST',
      headers: { cookie, 'x-csrf-token': session.csrfToken },
    })
    expect(ok.status).toBe(200)
    expect((await fetch(`${a.httpUrl}/api/v1/upstreams`, { headers: { cookie } })).status).toBe(200)
    const stop = new AbortController()
    const sse = await fetch(`${a.httpUrl}/api/v1/events`, {
      headers: { cookie },
      signal: stop.signal,
    })
    expect(sse.status).toBe(200)
    expect(sse.headers.get('content-type')).toContain('text/event-stream')
    stop.abort()
    // Without a session the operator routes still want the Bearer token.
    expect((await fetch(`${a.httpUrl}/api/v1/upstreams`)).status).toBe(401)
    expect(await pa.page.content()).not.toContain(a.adminToken)
  })

  it('deactivates from the keyboard, B revokes, A deletes', async () => {
    const { page } = pa
    const toggle = rowA().getByRole('switch')
    await toggle.focus()
    await page.keyboard.press('Space')
    await textOf(statusA(), /Approved/)
    expect(await toggle.isChecked()).toBe(false)

    const rowB = pb.page.locator(`tr[data-instance="${a.instanceId}"]`)
    await rowB.getByRole('button', { name: 'Revoke' }).click()
    await textOf(rowB.locator('[data-field=status]'), /Revoked/)
    await textOf(statusA(), /Revoked/, 5_000)

    await page.getByRole('button', { name: 'Delete Upstream' }).click()
    await textOf(statusA(), /Deleted/)
    expect(await page.evaluate('window.__noReload')).toBe(42)
  })

  it('shows the machine view: the log, and a replay to seq 1 with the chain verified', async () => {
    const { page } = pa
    await rowA().getByRole('link', { name: 'Machine view' }).click()
    await textOf(page.locator('[data-field=state]'), /Deleted.*chain verified/)
    expect(await page.locator('tr[data-seq]').count()).toBeGreaterThanOrEqual(5)
    await page.getByLabel('Replay to sequence').fill('1')
    await page.getByRole('button', { name: 'Replay' }).click()
    await textOf(
      page.locator('[data-field=replay]'),
      /State at seq 1: Pending[\s\S]*chain verified/
    )
    await screenshot(page, 'machine-view')

    await pb.page.goto(`${b.httpUrl}/console/#/requests`)
    await pb.page.locator(`tr[data-instance="${a.instanceId}"]`).getByRole('link').click()
    await textOf(pb.page.locator('[data-field=state]'), /Revoked/)
    await screenshot(pb.page, 'machine-view-request')
  })

  it('signs out: the cookie stops working', async () => {
    const cookie = cookieHeader(await pa.context.cookies())
    await pa.page.getByRole('button', { name: 'Sign out' }).click()
    await pa.page.getByLabel('Admin token').waitFor()
    expect((await fetch(`${a.httpUrl}/api/v1/upstreams`, { headers: { cookie } })).status).toBe(401)
    expect(pa.problems).toEqual([])
    expect(pb.problems).toEqual([])
  })
})
