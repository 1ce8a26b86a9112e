import { RemoteError, type RemoteClient } from '../contracts/handshake-client.ts'
import type { Upstream } from '../contracts/store.ts'

/**
 * The upstream server's instance id, from its handshake status route (which proves our secret).
 * Split horizon on the gateways needs it (ARCHITECTURE.md, "Loops"). Null when the upstream is
 * plain MQTT, has no request yet, or answered with an error; a network failure throws, and the
 * caller asks again on the next connect.
 */
export async function discoverPeer(
  upstream: Pick<Upstream, 'kind' | 'host' | 'httpPort' | 'tls' | 'remoteRequestId'>,
  secret: string | null,
  remote: RemoteClient
): Promise<string | null> {
  if (upstream.kind !== 'uns' || !upstream.remoteRequestId) return null
  try {
    const status = await remote.getStatus(upstream, upstream.remoteRequestId, secret ?? '')
    return status.instanceId ?? null
  } catch (err) {
    if (err instanceof RemoteError && err.status !== null) return null
    throw err
  }
}
