import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type Locator, type Page } from 'playwright-core'
import type { Instance } from '../helpers/instance.ts'

/**
 * Real headless Chromium for the console tests: Debian's chromium driven by playwright-core.
 * A missing browser fails the test with how to install it; it never skips.
 */
export const CHROMIUM = process.env.UB_CHROMIUM ?? '/usr/bin/chromium'
export const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `the console tests need Chromium at ${CHROMIUM}: install it (apt-get install -y chromium, ` +
        'as .ci/run does) or point UB_CHROMIUM at one'
    )
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
    ],
  })
}

/** A page of its own (own cookies) with every CSP report and page error collected. */
export async function openPage(browser: Browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  const page = await context.newPage()
  const problems: string[] = []
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('console', (msg) => {
    if (/Content Security Policy|Refused to/i.test(msg.text())) problems.push(msg.text())
  })
  return { context, page, problems }
}

/** Open the console on `inst` and sign in with its admin token; the first response's headers. */
export async function signIn(page: Page, inst: Instance): Promise<Record<string, string>> {
  const res = await page.goto(inst.httpUrl + '/console/')
  if (!res) throw new Error('no response for /console/')
  await page.getByLabel('Admin token').fill(inst.adminToken)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('navigation', { name: 'Console pages' }).waitFor()
  return res.headers()
}

/** Wait until the locator's text matches `pattern`; the text. */
export async function textOf(locator: Locator, pattern: RegExp, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  let last = ''
  for (;;) {
    last = (await locator.innerText({ timeout: timeoutMs }).catch(() => '')) ?? ''
    if (pattern.test(last)) return last
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${pattern} in ${locator}: last text ${last}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

/** The session cookie of `inst` held by the browser context, as a Cookie header. */
export function cookieHeader(cookies: { name: string; value: string }[]): string {
  const c = cookies.find((k) => k.name.startsWith('ub_console_'))
  if (!c) throw new Error('no ub_console_ cookie')
  return `${c.name}=${c.value}`
}
