import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { api, startInstance, type Instance } from '../helpers/instance.ts'
import { launchChromium, openPage, screenshot, signIn, textOf } from './browser.ts'

/**
 * Edit Upstream → Connection in real headless Chromium against one real instance: an upstream
 * made with a wrong broker port is fixed in the form, the row shows the new port, a bad value is
 * a message in the alert, and the machine view's log shows the edit (README, Edit an upstream).
 */
const NO_STACK = /^\s+at |\bError: .*\n\s+at /m

let a: Instance
let browser: Browser
let p: { context: BrowserContext; page: Page; problems: string[] }
let id = ''

beforeAll(async () => {
  browser = await launchChromium()
  a = await startInstance()
  p = await openPage(browser)
}, 60_000)
afterAll(async () => {
  await browser?.close()
  await a?.stop()
})

const row = () => p.page.locator(`tr[data-id="${id}"]`)

describe('console: Edit Upstream → Connection', () => {
  it('creates an upstream with a wrong broker port', async () => {
    const { page } = p
    await signIn(page, a)
    await page.getByLabel('Protocol').selectOption('mqtt://')
    await page.getByLabel('Broker Host').fill('127.0.0.1')
    await page.getByLabel('Broker Port').fill('1')
    await page.getByLabel('HTTP Port').fill('1') // nobody there: it stays Pending
    await page.getByRole('button', { name: 'Request Connection' }).click()
    const first = page.locator('tr[data-id]').first()
    await first.waitFor()
    id = (await first.getAttribute('data-id')) ?? ''
    expect(id).toMatch(/^up_/)
    await textOf(row().locator('td').first(), /127\.0\.0\.1:1\b/)
  })

  it('fixes the broker port in the Connection form: the row shows it, the state stays', async () => {
    const { page } = p
    await row().getByRole('button', { name: 'Edit Upstream' }).click()
    const form = page.locator(`form[aria-labelledby="conn-legend-${id}"]`)
    await form.waitFor()
    // Prefilled with the upstream's own connection.
    expect(await form.getByLabel('Broker Host').inputValue()).toBe('127.0.0.1')
    expect(await form.getByLabel('Broker Port').inputValue()).toBe('1')
    expect(await form.getByLabel('Protocol').inputValue()).toBe('mqtt://')
    // Keyboard only: the port field, then Save Connection, reached with Tab and Enter.
    await form.getByLabel('Broker Port').fill('1884')
    await form.getByLabel('Broker Port').focus()
    await page.keyboard.press('Enter')
    await textOf(page.locator('p.note[role=status]').first(), /Connection saved: .*:1884, Pending/)
    await textOf(row().locator('td').first(), /127\.0\.0\.1:1884/)
    await textOf(page.getByRole('heading', { level: 2 }).first(), /Edit Upstream .*:1884/)
    await textOf(row().locator('[data-field=status]'), /Pending/)
    expect((await api(a, 'GET', `/api/v1/upstreams/${id}`)).brokerPort).toBe(1884)
    await screenshot(page, 'edit-connection')
  })

  it('shows a bad value as a message in the alert, not a stack trace', async () => {
    const { page } = p
    const form = page.locator(`form[aria-labelledby="conn-legend-${id}"]`)
    await form.getByLabel('Broker Host').fill('bad host!')
    await form.getByRole('button', { name: 'Save Connection' }).click()
    const alert = page.locator('section.panel', { has: form }).locator('p.error[role=alert]')
    const text = await textOf(alert, /Invalid input: .*host.*\(400 invalid_request\)/i)
    expect(text).not.toMatch(NO_STACK)
    expect((await api(a, 'GET', `/api/v1/upstreams/${id}`)).host).toBe('mqtt://127.0.0.1')
  })

  it("shows the edit in the machine view's log, the chain verified", async () => {
    const { page } = p
    await row().getByRole('link', { name: 'Machine view' }).click()
    await textOf(page.locator('[data-field=state]'), /Pending.*chain verified/)
    const last = page.locator('tr[data-seq]').last()
    await textOf(last, /upstream\.connection\.set/)
    await screenshot(page, 'edit-connection-machine-view')
    expect(p.problems).toEqual([])
  })

  it('creates a plain MQTT upstream with a user name and password; a bad client key is a message', async () => {
    const { page } = p
    await page.getByRole('link', { name: 'Upstreams', exact: true }).first().click()
    const create = page.locator('section[aria-labelledby=create-title]')
    await create.getByLabel('Upstream kind').selectOption('mqtt')
    // A plain broker has no handshake API: no HTTP port to give, a user name and password instead.
    expect(await create.getByLabel('HTTP Port').isVisible()).toBe(false)
    await create.getByLabel('Broker Host').fill('127.0.0.3')
    await create.getByLabel('Broker Port').fill('1885')
    await create.getByLabel('User name').fill('plant')
    await create.getByLabel('Password').fill('s3cret-pass')
    await create.locator('summary', { hasText: 'TLS options' }).click()
    await create.getByLabel('Client private key (PEM)').fill('not a key')
    await create.getByRole('button', { name: 'Request Connection' }).click()
    const alert = create.locator('p.error[role=alert]')
    const text = await textOf(alert, /Invalid input: .*key.*\(400 invalid_request\)/i)
    expect(text).not.toMatch(NO_STACK)

    await create.getByLabel('Client private key (PEM)').fill('')
    await create.getByRole('button', { name: 'Request Connection' }).click()
    await textOf(
      create.locator('p.note[role=status]'),
      /Requested mqtt:\/\/127\.0\.0\.3:1885: Approved/
    )
    const plain = page.locator('tr[data-id]', { hasText: '127.0.0.3:1885' })
    await textOf(plain.locator('td').first(), /plain MQTT/)
    await textOf(plain.locator('[data-field=status]'), /Approved/)
    // The password went to the API, not into the page.
    expect(await create.getByLabel('Password').inputValue()).toBe('')
    expect(await page.content()).not.toContain('s3cret-pass')
    const listed = (await api(a, 'GET', '/api/v1/upstreams')) as Array<Record<string, unknown>>
    expect(listed.find((u) => u.host === 'mqtt://127.0.0.3')).toMatchObject({
      kind: 'mqtt',
      brokerPort: 1885,
      username: 'plant',
    })
    await screenshot(page, 'create-plain-mqtt')
    expect(p.problems).toEqual([])
  })
})
