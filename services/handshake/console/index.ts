import type { Bus } from '../../common/bus/bus.ts'
import { BUCKETS } from '../../contracts/buckets.ts'
import { Hono, type Context, type MiddlewareHandler } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import type { Registry } from 'prom-client'
import { matchesHash, sameSecret } from '../../common/digest.ts'
import { errorJson } from '../server/errors.ts'
import { tokenBuckets } from '../server/rate-limit.ts'
import { etagMatches, loadAssets } from './assets.ts'
import {
  createSessionStore,
  DEFAULT_MAX_AGE_MS,
  type ConsoleSession,
  type SessionOptions,
  type SessionStore,
} from './sessions.ts'

/**
 * The operator console (docs/CONSOLE.md): static pages under /console/, and the session that
 * lets a browser use the operator API without holding the admin token. Sign-in trades the token
 * for an HttpOnly, SameSite=Strict cookie; a state change with that cookie must also carry the
 * session's CSRF token in X-CSRF-Token.
 */
export const CONSOLE_PREFIX = '/console'
export const CSRF_HEADER = 'x-csrf-token'
const LOGIN_BODY_LIMIT = 4 * 1_024
/** Failed sign-ins a source may make at once, and regain per minute. */
export const SIGN_IN_FAILURES_PER_MINUTE = 10
const SIGN_IN_MAX_SOURCES = 10_000
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/** No inline script or style anywhere: everything comes from files this server serves. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ')

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
}

export interface ConsoleOptions {
  adminTokenHash: string
  instanceId: string
  /** Where `ub_console_sessions_total` and `ub_console_sessions` go (the app's /metrics). */
  metrics?: Registry
  /** The fabric's bus: sessions are kept where every handshake replica finds them. */
  bus?: Bus
  sessions?: Omit<SessionOptions, 'metrics'>
  assetsDir?: string
  /**
   * The budget of failed sign-ins: `key` names the source (its network, as the handshake's rate
   * limit counts), the counters go where the handshake's guards are. Without it every source
   * counts as one.
   */
  signInLimit?: {
    key: (c: Context) => string
    perMinute?: number
    maxKeys?: number
    now?: () => number
    onLimited?: () => void
    onEvicted?: () => void
    onSize?: (size: number) => void
  }
}

export interface OperatorConsole {
  /** Mount at CONSOLE_PREFIX: `app.route(CONSOLE_PREFIX, console.routes)`. */
  routes: Hono
  /**
   * For the operator routes, in place of the Bearer check: `'none'` when the request has an
   * Authorization header or no live session cookie (check the Bearer token as always), `'ok'`
   * for a session (with the CSRF token unless the method is safe), or the 403 to answer.
   */
  authorize(c: Context): Promise<'none' | 'ok' | Response>
  sessions: SessionStore
}

export const isConsolePath = (path: string): boolean =>
  path === CONSOLE_PREFIX || path.startsWith(CONSOLE_PREFIX + '/')

/** The console's routes and the cookie check the operator middleware asks. */
export function createConsole(options: ConsoleOptions): OperatorConsole {
  const sessions = createSessionStore({
    ...options.sessions,
    ...(options.metrics ? { metrics: options.metrics } : {}),
    // Shared by the handshake replicas: a load balancer may send each request to another one.
    ...(options.bus
      ? {
          shared: options.bus.kv(BUCKETS.consoleSessions, {
            ttlMs: options.sessions?.maxAgeMs ?? DEFAULT_MAX_AGE_MS,
          }),
        }
      : {}),
  })
  // One cookie per instance: two instances on one host (ports do not separate cookies) coexist.
  const cookieName = `ub_console_${options.instanceId.replace(/[^A-Za-z0-9_-]/g, '')}`
  const maxAgeMs = options.sessions?.maxAgeMs ?? DEFAULT_MAX_AGE_MS
  const limit = options.signInLimit
  const perMinute = limit?.perMinute ?? SIGN_IN_FAILURES_PER_MINUTE
  // Only failures spend the budget: an operator who signs in right is never slowed down.
  const failures = tokenBuckets({
    perMinute,
    burst: perMinute,
    maxKeys: limit?.maxKeys ?? SIGN_IN_MAX_SOURCES,
    ...(limit?.now ? { now: limit.now } : {}),
    ...(limit?.onEvicted ? { onEvicted: limit.onEvicted } : {}),
    ...(limit?.onSize ? { onSize: limit.onSize } : {}),
  })
  const sourceOf = (c: Context) => limit?.key(c) ?? 'any'

  const sessionOf = async (c: Context): Promise<ConsoleSession | undefined> => {
    const id = getCookie(c, cookieName)
    return id ? sessions.touch(id) : undefined
  }
  const csrfRefused = (c: Context, session: ConsoleSession): Response | null => {
    if (SAFE_METHODS.has(c.req.method)) return null
    const given = c.req.header(CSRF_HEADER)
    if (given && sameSecret(given, session.csrf)) return null
    return errorJson(
      c,
      403,
      'csrf_required',
      'a change made with the console session needs its X-CSRF-Token header'
    )
  }
  const sessionJson = (c: Context, session: ConsoleSession, status: 200 = 200) => {
    c.header('cache-control', 'no-store')
    return c.json(
      {
        instanceId: options.instanceId,
        csrfToken: session.csrf,
        expiresAt: new Date(session.expiresAt).toISOString(),
      },
      status
    )
  }

  const routes = new Hono()
  routes.use('*', securityHeaders)
  routes.post('/session', bodyLimit({ maxSize: LOGIN_BODY_LIMIT }), async (c) => {
    const source = sourceOf(c)
    // Checked before the token: a source out of budget learns nothing, not even a right guess.
    const waitS = failures.waitS(source)
    if (waitS > 0) {
      limit?.onLimited?.()
      c.header('Retry-After', String(waitS))
      return errorJson(
        c,
        429,
        'rate_limited',
        `too many failed sign-ins from ${source}; retry in ${waitS} s`
      )
    }
    const token = await readToken(c)
    if (typeof token !== 'string') return token
    // matchesHash compares sha-256 digests with timingSafeEqual: constant time.
    if (!matchesHash(token, options.adminTokenHash)) {
      failures.spend(source)
      sessions.refused()
      return errorJson(c, 401, 'unauthorized', 'wrong admin token')
    }
    const session = await sessions.create()
    setCookie(c, cookieName, session.id, {
      httpOnly: true,
      sameSite: 'Strict',
      path: '/',
      secure: new URL(c.req.url).protocol === 'https:',
      maxAge: Math.floor(maxAgeMs / 1_000),
    })
    return sessionJson(c, session)
  })
  routes.get('/session', async (c) => {
    const session = await sessionOf(c)
    if (!session) return errorJson(c, 401, 'unauthorized', 'not signed in')
    return sessionJson(c, session)
  })
  routes.delete('/session', async (c) => {
    const session = await sessionOf(c)
    if (!session) return errorJson(c, 401, 'unauthorized', 'not signed in')
    const refused = csrfRefused(c, session)
    if (refused) return refused
    await sessions.delete(session.id)
    deleteCookie(c, cookieName, { path: '/' })
    return c.body(null, 204)
  })
  mountAssets(routes, options.assetsDir)

  return {
    routes,
    sessions,
    async authorize(c) {
      if (c.req.header('authorization') !== undefined) return 'none'
      const session = await sessionOf(c)
      if (!session) return 'none'
      return csrfRefused(c, session) ?? 'ok'
    },
  }
}

const securityHeaders: MiddlewareHandler = async (c, next) => {
  await next()
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) c.res.headers.set(name, value)
}

/** `{token}` from a JSON body, or the error to answer. */
async function readToken(c: Context): Promise<string | Response> {
  if (!(c.req.header('content-type') ?? '').toLowerCase().startsWith('application/json')) {
    return errorJson(c, 415, 'unsupported_media_type', 'send {"token": "…"} as application/json')
  }
  let body: unknown
  try {
    body = await c.req.json()
  } catch {
    return errorJson(c, 400, 'malformed_json', 'the request body is not valid JSON')
  }
  const token = (body as { token?: unknown } | null)?.token
  if (typeof token !== 'string' || token.length === 0 || token.length > 1_024) {
    return errorJson(c, 400, 'invalid_request', 'token: the admin token, 1–1024 characters')
  }
  return token
}

/** `/console` → `/console/`, which is index.html; `/console/<file>` one asset, with an ETag. */
function mountAssets(routes: Hono, dir: string | undefined): void {
  const assets = loadAssets(dir)
  const serve = (c: Context, name: string) => {
    const asset = assets.get(name)
    if (!asset) return errorJson(c, 404, 'not_found', `no console file ${name}`)
    const headers = { etag: asset.etag, 'cache-control': 'no-cache' }
    if (etagMatches(c.req.header('if-none-match'), asset.etag)) return c.body(null, 304, headers)
    return c.body(asset.body as Uint8Array<ArrayBuffer>, 200, {
      ...headers,
      'content-type': asset.type,
    })
  }
  routes.get('*', (c) => {
    const name = c.req.path.slice(CONSOLE_PREFIX.length + 1)
    if (c.req.path === CONSOLE_PREFIX) return c.redirect(CONSOLE_PREFIX + '/', 301)
    return serve(c, name === '' ? 'index.html' : name)
  })
}
