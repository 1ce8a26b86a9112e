import { decodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import { BRIDGE_CLIENT_PREFIX, LINKS_BUCKET, type LinkStatus } from '../contracts/links.ts'

/**
 * Split horizon for two instances bridged both ways (ARCHITECTURE.md §9). MQTT 3.1.1
 * carries no origin, and no-local only hides a client's own publishes, so a message that
 * instance A's bridge published into B would otherwise go straight back to A over B's bridge to
 * A, and loop.
 *
 * The pieces: a bridge's upstream client id names its instance (`upstreamClientId`); the
 * supervisor learns each upstream server's instance id and writes it into the link status
 * (`links` KV, `peerInstanceId`); the gateway's forwarding decision then drops, for the local
 * bridge session `ub-bridge-<upstream id>`, what that same peer published.
 */

/** True when delivering what `originClientId` published to bridge session `clientId` would send it back. */
export function isBridgeEcho(
  clientId: string,
  originClientId: string | undefined,
  peerOf: (upstreamId: string) => string | null | undefined
): boolean {
  if (!originClientId || !clientId.startsWith(BRIDGE_CLIENT_PREFIX)) return false
  const peer = peerOf(clientId.slice(BRIDGE_CLIENT_PREFIX.length))
  return !!peer && originClientId.startsWith(peer + '-')
}

export interface PeerDirectory {
  peerOf(upstreamId: string): string | null | undefined
  close(): Promise<void>
}

/** Upstream id → peer instance id, kept current from the `links` bucket. */
export async function watchPeers(bus: Bus): Promise<PeerDirectory> {
  const peers = new Map<string, string>()
  const kv = await bus.kv(LINKS_BUCKET)
  const sub: Subscription = await kv.watch((entry) => {
    if (entry.operation === 'DEL') return void peers.delete(entry.key)
    try {
      const peer = decodeJson<LinkStatus>(entry.value).peerInstanceId
      if (peer) peers.set(entry.key, peer)
      else peers.delete(entry.key)
    } catch {
      // Not a link status (an older writer): it names no peer.
      peers.delete(entry.key)
    }
  })
  return { peerOf: (id) => peers.get(id), close: () => sub.unsubscribe() }
}
