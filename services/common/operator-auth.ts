import type { MiddlewareHandler } from 'hono'
import { bearerAuth } from 'hono/bearer-auth'

const unauthorized = (message: string): Response =>
  new Response(JSON.stringify({ error: { code: 'unauthorized', message } }), {
    status: 401,
    headers: { 'content-type': 'application/json' },
  })

/**
 * Operator routes: `Authorization: Bearer <admin token>`, checked by `verifyToken` (a constant-time
 * hash comparison, or the binding store's). Every failure, including a malformed header or a
 * check that throws, is a 401 `unauthorized`.
 */
export function requireOperator({
  verifyToken,
}: {
  verifyToken: (token: string) => boolean | Promise<boolean>
}): MiddlewareHandler {
  return bearerAuth({
    verifyToken: async (token) => {
      try {
        return await verifyToken(token)
      } catch {
        return false
      }
    },
    noAuthenticationHeader: {
      message: () => unauthorized('this route needs Authorization: Bearer <admin token>'),
    },
    invalidAuthenticationHeader: {
      message: () => unauthorized('the Authorization header must be Bearer <admin token>'),
    },
    invalidToken: { message: () => unauthorized('wrong admin token') },
  })
}
