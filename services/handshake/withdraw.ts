import type { StoreClient } from '../contracts/store-client.ts'
import type { Upstream } from '../contracts/store.ts'
import { RemoteError, type RemoteClient } from '../contracts/handshake-client.ts'

/**
 * Withdraw an upstream's request on its server. Null when nothing is left to withdraw there:
 * withdrawn now, never sent, or already forgotten or closed by the server (404, 409); otherwise
 * why the server could not be asked. Errors other than the server's answer are thrown.
 * The operator's delete calls it first; the poller calls it again while the withdrawal is owed.
 */
export async function withdrawRequest(
  store: StoreClient,
  remote: RemoteClient,
  up: Upstream
): Promise<string | null> {
  if (!up.remoteRequestId) return null
  const { password: secret } = await store.call('upstream.credentials', { id: up.id })
  try {
    await remote.withdraw(up, up.remoteRequestId, secret ?? '')
    return null
  } catch (err) {
    if (!(err instanceof RemoteError)) throw err
    return err.status === 404 || err.status === 409 ? null : err.message
  }
}
