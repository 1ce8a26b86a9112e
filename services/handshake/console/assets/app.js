import { describeError, loadSession, setSignedOutHandler, signIn, signOut } from './api.js'
import { fill, h } from './dom.js'
import { machinePage } from './machine.js'
import { meshPage } from './mesh.js'
import { requestsPage } from './requests.js'
import { routePage } from './route.js'
import { upstreamsPage } from './upstreams.js'

/**
 * The console shell: sign-in, the page named by the location hash (#/upstreams, #/requests,
 * #/mesh, #/route[/<topic>], #/machine/<upstream|request>/<id>), and the one event stream that
 * keeps every page live.
 */
const $ = (id) => document.getElementById(id)
const PAGES = {
  upstreams: (el) => upstreamsPage(el),
  requests: (el) => requestsPage(el),
  mesh: (el) => meshPage(el),
  route: (el, parts) => routePage(el, parts.join('/')),
  machine: (el, [machine, id]) => machinePage(el, machine, id),
}

let current = null
let events = null
let signedIn = false

function route() {
  if (!signedIn) return
  const [name, ...rest] = (location.hash || '#/upstreams').replace(/^#\/?/, '').split('/')
  const make = PAGES[name] ?? PAGES.upstreams
  current?.destroy?.()
  const el = $('page')
  fill(el)
  for (const link of document.querySelectorAll('#nav a')) {
    const here = link.getAttribute('href') === `#/${name}`
    if (here) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
  current = make(el, rest.map(decodeURIComponent))
}

function setLive(text, ok) {
  const live = $('live')
  live.textContent = text
  live.className = ok ? 'live live-ok' : 'live live-down'
}

/** Every transition of every machine, from /api/v1/events (the cookie goes along). */
function openEvents() {
  events?.close()
  const source = new EventSource('/api/v1/events')
  events = source
  source.addEventListener('open', () => setLive('Live', true))
  source.addEventListener('transition', (e) => {
    try {
      current?.onTransition?.(JSON.parse(e.data))
    } catch {
      // a page that cannot use one event still gets the next
    }
  })
  source.addEventListener('audit', (e) => showAudit(e.data))
  source.addEventListener('error', () => {
    setLive('Reconnecting…', false)
    // A refused stream (401) is closed for good: check the session, then open it again.
    if (source.readyState === EventSource.CLOSED && events === source) {
      setTimeout(async () => {
        if (events !== source) return
        const session = await loadSession().catch(() => undefined)
        if (session === null) showLogin()
        else if (events === source) openEvents()
      }, 2_000)
    }
  })
}

function showAudit(data) {
  let alarm
  try {
    alarm = JSON.parse(data)
  } catch {
    alarm = {}
  }
  const text =
    alarm.status === 'broken'
      ? `Audit alarm: the transition hash chain is broken (${alarm.rows ?? '?'} rows).`
      : 'Audit: the transition hash chain verifies again.'
  const main = $('main')
  const old = $('audit')
  const banner = h('p', { id: 'audit', className: 'error banner', attrs: { role: 'alert' } }, text)
  if (old) old.replaceWith(banner)
  else main.prepend(banner)
}

function start(session) {
  signedIn = true
  $('login').hidden = true
  $('nav').hidden = false
  $('logout').hidden = false
  $('instance').textContent = `instance ${session.instanceId}`
  openEvents()
  route()
}

function showLogin() {
  signedIn = false
  events?.close()
  events = null
  current?.destroy?.()
  current = null
  fill($('page'))
  $('nav').hidden = true
  $('logout').hidden = true
  $('instance').textContent = ''
  $('live').textContent = ''
  $('login').hidden = false
  $('login-token').focus()
}

async function boot() {
  setSignedOutHandler(() => {
    if (signedIn) showLogin()
  })
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault()
    const input = $('login-token')
    const token = input.value
    input.value = '' // the token is not kept in the page
    $('login-error').textContent = ''
    try {
      start(await signIn(token))
    } catch (err) {
      $('login-error').textContent = describeError(err)
    }
  })
  $('logout').addEventListener('click', async () => {
    try {
      await signOut()
    } catch {
      // signed out either way: the session is gone or will expire
    }
    showLogin()
  })
  window.addEventListener('hashchange', route)
  try {
    const session = await loadSession()
    if (session) start(session)
    else showLogin()
  } catch (err) {
    showLogin()
    $('login-error').textContent = describeError(err)
  }
}

boot()
