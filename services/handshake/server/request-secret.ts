import type { Context } from 'hono'
import { bearerToken } from '../../common/bearer.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { IncomingRequest } from '../../contracts/store.ts'
import { matchesHash } from '../secret.ts'
import { ApiError } from './errors.ts'

/**
 * The incoming request `requestId`, if the caller holds its secret (`Authorization: Bearer
 * <secret>`, checked against the hash that came with the request): how a downstream proves it is
 * the one that asked, on status, withdrawal and topology exchange. An unknown id is a 404: the
 * downstream then asks again.
 */
export async function requireRequestSecret(
  c: Context,
  store: StoreClient,
  requestId: string
): Promise<IncomingRequest> {
  const secret = bearerToken(c.req.header('authorization'))
  if (!secret)
    throw new ApiError(
      401,
      'unauthorized',
      'send the request secret as Authorization: Bearer <secret>'
    )
  const { secretHash } = await store.call('request.secretHash', { id: requestId })
  if (!matchesHash(secret, secretHash))
    throw new ApiError(401, 'unauthorized', 'wrong secret for this request')
  return store.call('request.get', { id: requestId })
}
