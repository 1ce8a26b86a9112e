/**
 * Every KV bucket the services share, by name: one list, so two services can never disagree
 * on where a piece of state lives. Each bucket lives under the bus prefix. The two that code in
 * common/ opens itself are declared there (common/ imports no contract) and listed here.
 */
import { INTERNAL_BUCKET } from '../common/internal-credential.ts'
import { PEER_KEYS_BUCKET } from '../common/instance-key.ts'
import { PRESENCE_BUCKET } from '../common/presence.ts'
import { TOPOLOGY_BUCKET, TOPOLOGY_HEARD_BUCKET } from '../common/topology-db.ts'

export const BUCKETS = {
  /** Link status per upstream id (`LinkStatus`): written by the owning supervisor, read by the API and the gateways. */
  links: 'links',
  /** Bridge ownership leases per upstream id: one supervisor replica owns a bridge. */
  leases: 'bridge-leases',
  /** Supervisor replicas present now (TTL = lease TTL): how many share the bridges. */
  supervisors: 'supervisors',
  /** The mesh's link-state database: one advert per instance. */
  topology: TOPOLOGY_BUCKET,
  /** Accepted requests whose downstream called the topology exchange recently. */
  topologyHeard: TOPOLOGY_HEARD_BUCKET,
  /** The credential the supervisor's local bridge sessions present to the gateways. */
  internal: INTERNAL_BUCKET,
  /** Peers' public keys as learned in the handshake (`req.<request id>`, `up.<upstream id>`). */
  peerKeys: PEER_KEYS_BUCKET,
  /** Who is in the fabric: one record per service and process, TTL 3 × presenceIntervalMs. */
  presence: PRESENCE_BUCKET,
  /** Gateway state shared by every gateway: retained messages, subscriptions, queues, wills. */
  gatewayRetained: 'gw_retained',
  gatewaySubscriptions: 'gw_subs',
  gatewayOutgoing: 'gw_outgoing',
  gatewayWills: 'gw_wills',
  /** Operator console sessions by the sha-256 of the cookie (TTL 12 h): every handshake replica's. */
  consoleSessions: 'console_sessions',
} as const
