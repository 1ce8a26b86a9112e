import type { Context, ErrorHandler, NotFoundHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { Logger } from '../../common/log.ts'
import { UbError } from '../../common/errors.ts'

/** An error the API answers with as `{error:{code,message}}` and its own status. */
export class ApiError extends UbError {
  readonly status: ContentfulStatusCode
  constructor(
    status: ContentfulStatusCode,
    code: string,
    message: string,
    options?: { cause?: unknown; details?: unknown }
  ) {
    super(code, message, options)
    this.name = 'ApiError'
    this.status = status
  }
}

/** Store and bus codes (services/common/errors.ts) → HTTP status. */
const STATUS_BY_CODE: Record<string, ContentfulStatusCode> = {
  not_found: 404,
  invalid_transition: 409,
  version_conflict: 409,
  kv_conflict: 409,
  already_exists: 409,
  invalid_request: 400,
  storage_unavailable: 503,
  no_responders: 503,
  bus_timeout: 503,
  bus_closed: 503,
}

/** Codes for the HTTP exceptions hono and its middleware throw. */
const CODE_BY_STATUS: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
}

export function errorJson(
  c: Context,
  status: ContentfulStatusCode,
  code: string,
  message: string,
  details?: unknown
): Response {
  const error = details === undefined ? { code, message } : { code, message, details }
  return c.json({ error }, status)
}

/** The one error boundary: known errors → JSON with a 4xx/503; anything else is logged, then a bare 500. */
export function createErrorHandler({ log }: { log: Logger }): ErrorHandler {
  return function onError(err, c) {
    if (err instanceof ApiError) return errorJson(c, err.status, err.code, err.message, err.details)
    if (err instanceof HTTPException) {
      // bearerAuth hands us a finished JSON response (see auth.ts): keep its WWW-Authenticate.
      if (err.res) return err.getResponse()
      // hono's validator throws this for a body that is not JSON; it bypasses defaultHook.
      if (err.status === 400 && /malformed json/i.test(err.message)) {
        return errorJson(c, 400, 'malformed_json', 'the request body is not valid JSON')
      }
      const status = err.status as ContentfulStatusCode
      return errorJson(
        c,
        status,
        CODE_BY_STATUS[status] ?? `http_${status}`,
        err.message || 'error'
      )
    }
    if (err instanceof UbError) {
      const status = STATUS_BY_CODE[err.code]
      if (status) return errorJson(c, status, err.code, err.message)
    }
    log.error({ err, method: c.req.method, path: c.req.path }, 'unhandled API error')
    return errorJson(c, 500, 'internal', 'internal error')
  }
}

export const notFound: NotFoundHandler = (c) =>
  errorJson(c, 404, 'not_found', `no route for ${c.req.method} ${c.req.path}`)

interface ZodLikeIssue {
  path: PropertyKey[]
  message: string
  code?: string
}

/** zod failures → 400 invalid_request, naming each offending field. */
export function validationHook(
  result: { success: boolean; error?: { issues: ZodLikeIssue[] } },
  c: Context
): Response | undefined {
  if (result.success) return undefined
  const issues = (result.error?.issues ?? []).map((i) => ({
    path: i.path.map(String).join('.'),
    message: i.message,
  }))
  const message = issues
    .slice(0, 5)
    .map((i) => (i.path ? `${i.path}: ${i.message}` : i.message))
    .join('; ')
  return errorJson(c, 400, 'invalid_request', message || 'invalid request', issues)
}
