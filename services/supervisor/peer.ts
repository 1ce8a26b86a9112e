import { decodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import type { Upstream } from '../store/api.ts'
import { LINKS_BUCKET, type LinkStatus } from './link-status.ts'

/**
 * Split horizon for two instances bridged both ways (DESIGN §7, "no echo"). MQTT 3.1.1 carries
 * no origin, and no-local only hides a client's own publishes, so a message that instance A's
 * bridge published into B would otherwise go straight back to A over B's bridge to A, and loop.
 *
 * The pieces: the bridge's upstream client id is `<our instance id>-<upstream id>`, so on the
 * upstream gateway a message's origin client id names the instance it came from; the supervisor
 * learns each upstream server's instance id (its public handshake status carries it) and writes
 * it into the link status (`links` KV, `peerInstanceId`); a gateway's `authorizeForward` then
 * drops, for the local bridge session `ub-bridge-<upstream id>`, what that same peer published
 * (`isBridgeEcho`, fed by `watchPeers`).
 */
export const BRIDGE_CLIENT_PREFIX = 'ub-bridge-'
const DEFAULT_TIMEOUT_MS = 3_000 // 3 s

/** Upstream client id: the origin every gateway upstream sees on what this bridge publishes. */
export const upstreamClientId = (instanceId: string, upstreamId: string): string =>
  `${instanceId}-${upstreamId}`

/** The upstream server's instance id, from `GET /api/v1/handshake/requests/:id`. */
export async function discoverPeer(
  upstream: Pick<Upstream, 'kind' | 'host' | 'httpPort' | 'remoteRequestId'>,
  {
    secret,
    fetchFn = fetch,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  }: { secret?: string | null; fetchFn?: typeof fetch; timeoutMs?: number } = {}
): Promise<string | null> {
  if (upstream.kind !== 'uns' || !upstream.remoteRequestId) return null
  const base = `http://${new URL(upstream.host).hostname}:${upstream.httpPort}`
  const url = `${base}/api/v1/handshake/requests/${encodeURIComponent(upstream.remoteRequestId)}`
  // The status route proves the secret (the request's owner only), like the poller does.
  const headers: Record<string, string> = secret ? { authorization: `Bearer ${secret}` } : {}
  const res = await fetchFn(url, { headers, signal: AbortSignal.timeout(timeoutMs) })
  if (!res.ok) return null
  const body = (await res.json()) as { instanceId?: unknown }
  return typeof body.instanceId === 'string' ? body.instanceId : null
}

/**
 * For a gateway's `authorizeForward`: true when delivering a message that `originClientId`
 * published to the local bridge session `clientId` would send it back where it came from.
 */
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
