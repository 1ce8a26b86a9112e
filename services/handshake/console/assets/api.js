/**
 * The operator API from the page: the session cookie goes along by itself (same origin,
 * HttpOnly: this code never sees it); every change carries the session's CSRF token.
 */

let csrfToken = null
/** Called when the session is gone (401): the app shows the sign-in form again. */
let onSignedOut = () => {}

export const setSignedOutHandler = (fn) => {
  onSignedOut = fn
}

/** An API answer that is an error, with the server's code and message (never a stack). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.code = code
  }
}

/** What a person reads for an error: the server's message, or a plain sentence. */
export function describeError(err) {
  if (err instanceof ApiError) {
    const what =
      err.status === 409
        ? 'Refused'
        : err.status === 400
          ? 'Invalid input'
          : err.status === 403
            ? 'Forbidden'
            : err.status === 429
              ? 'Too many attempts'
              : err.status >= 500
                ? 'Server problem'
                : 'Error'
    return `${what}: ${err.message} (${err.status} ${err.code})`
  }
  if (err instanceof TypeError) return 'The server cannot be reached; try again.'
  return 'Something went wrong; try again.'
}

async function parse(res) {
  const text = await res.text()
  if (!text) return null
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

/** `method path` with an optional JSON body; the parsed answer, or an ApiError. */
export async function api(method, path, body) {
  const headers = { accept: 'application/json' }
  if (body !== undefined) headers['content-type'] = 'application/json'
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const data = await parse(res)
  if (res.ok) return data
  const error = data?.error ?? {}
  const err = new ApiError(
    res.status,
    error.code ?? `http_${res.status}`,
    error.message ?? res.statusText
  )
  if (res.status === 401 && !path.startsWith('/console/session')) {
    csrfToken = null
    onSignedOut()
  }
  throw err
}

/** The current session ({instanceId, csrfToken, expiresAt}), or null when not signed in. */
export async function loadSession() {
  try {
    const session = await api('GET', '/console/session')
    csrfToken = session.csrfToken
    return session
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null
    throw err
  }
}

/** Trade the admin token for a session cookie; the token is not kept anywhere. */
export async function signIn(token) {
  const session = await api('POST', '/console/session', { token })
  csrfToken = session.csrfToken
  return session
}

export async function signOut() {
  try {
    await api('DELETE', '/console/session')
  } finally {
    csrfToken = null
  }
}
