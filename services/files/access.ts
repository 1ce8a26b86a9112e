/**
 * Who is asking for a file, and may they. The gateway's principals, as for MQTT: a bridge (a
 * downstream's instance id and secret, HTTP Basic) reads and writes only inside its grants, a
 * local user and a loopback client (under the `anonymous` policy) everywhere, and the operator's
 * token (Bearer) everything. Every request is checked on its own; answers are the gateway's
 * authenticator's, cached briefly and dropped when a grant changes.
 */
import { isWithinAny } from '../../machines/namespace.ts'
import { matchesHash } from '../common/digest.ts'
import type { Authenticator, Principal } from '../gateway/index.ts'

export type FileCaller = { kind: 'operator' } | { kind: 'principal'; principal: Principal }

export class AccessError extends Error {
  constructor(
    readonly status: 401 | 403 | 503,
    readonly code: string,
    message: string
  ) {
    super(message)
  }
}

export interface AccessOptions {
  authenticator: Authenticator
  /** sha-256 hex of the admin token. */
  adminTokenHash: string
}

/** The caller of a request with `authorization` from `remoteAddress`, or an AccessError. */
export function createAccess({ authenticator, adminTokenHash }: AccessOptions) {
  return async function callerOf(
    authorization: string | undefined,
    remoteAddress: string | undefined
  ): Promise<FileCaller> {
    const [scheme = '', credentials = ''] = (authorization ?? '').trim().split(/\s+/, 2)
    if (/^bearer$/i.test(scheme)) {
      if (matchesHash(credentials, adminTokenHash)) return { kind: 'operator' }
      throw new AccessError(401, 'unauthorized', 'wrong admin token')
    }
    let username: string | undefined
    let password: Buffer | undefined
    if (/^basic$/i.test(scheme)) {
      const decoded = Buffer.from(credentials, 'base64').toString('utf8')
      const colon = decoded.indexOf(':')
      if (colon < 0)
        throw new AccessError(401, 'unauthorized', 'Basic credentials are user:password')
      username = decoded.slice(0, colon)
      password = Buffer.from(decoded.slice(colon + 1), 'utf8')
    } else if (authorization !== undefined) {
      throw new AccessError(401, 'unauthorized', 'the Authorization header must be Basic or Bearer')
    }
    try {
      const principal = await authenticator.authenticate({ username, password, remoteAddress })
      return { kind: 'principal', principal }
    } catch (err) {
      const returnCode = (err as { returnCode?: number }).returnCode
      if (returnCode === 3) throw new AccessError(503, 'unavailable', (err as Error).message)
      if (returnCode === 4 || returnCode === 5)
        throw new AccessError(401, 'unauthorized', (err as Error).message)
      throw err
    }
  }
}

/**
 * May `caller` read or write the file `name`? A bridge's grants are namespaces: the file's levels
 * must lie inside one, as a topic's would. The `$` levels are the server's, as for topics.
 */
export function mayAccess(caller: FileCaller, name: string): boolean {
  if (caller.kind === 'operator') return true
  const p = caller.principal
  if (name.startsWith('$')) return p.kind === 'internal'
  return p.kind !== 'bridge' || isWithinAny(name, p.grants)
}
