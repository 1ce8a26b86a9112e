import type { Logger } from '../common/log.ts'
import { RemoteError, type RemoteClient } from '../contracts/handshake-client.ts'
import type { Upstream } from '../contracts/store.ts'

/**
 * The upstream server's instance id, from its handshake status route (which proves our secret).
 * Split horizon on the gateways needs it (ARCHITECTURE.md §9). Null when the upstream is plain
 * MQTT, has no request yet, or answered with an error; a network failure throws, and the caller
 * asks again on the next connect.
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

/** One link's peer: what `discoverPeer` said last, and a way to ask it. */
export interface PeerLookup {
  /** The peer's instance id; null until learned. */
  peer(): string | null
  /** Ask once; concurrent calls share the question, and an unanswered one is asked again later. */
  learn(secret: string | null): Promise<void>
}

/**
 * Split horizon needs the peer's instance id on the gateway before the link's first message: the
 * link learns it before connecting (and writes it to the link status), and asks again on the next
 * connect if the upstream server could not be asked.
 */
export function createPeerLookup({
  upstream,
  remote,
  applyMesh,
  flushStatus,
  log,
}: {
  upstream: Upstream
  remote: RemoteClient
  /** Runs once the peer is known, before the first connect subscribes anything. */
  applyMesh: () => Promise<void>
  flushStatus: () => Promise<void> | undefined
  log: Logger
}): PeerLookup {
  let peer: string | null = null
  let lookup: Promise<void> | undefined
  return {
    peer: () => peer,
    learn: (secret) =>
      (lookup ??= discoverPeer(upstream, secret, remote).then(
        async (p) => {
          peer = p
          if (!p) lookup = undefined // not answered: ask again on the next connect
          await applyMesh() // before the first connect subscribes anything
          await flushStatus()
        },
        (err: unknown) => {
          lookup = undefined
          log.warn({ upstreamId: upstream.id, err }, 'could not learn the peer instance id')
        }
      )),
  }
}
