import { z } from 'zod'
import { BUCKETS } from './buckets.ts'

/**
 * The contract between a bridge supervisor and the rest of the fabric about one bridge link:
 * its status (what the API shows, what the gateways read for split horizon) and the client ids
 * it uses on both ends.
 */

/** What `GET /api/v1/upstreams/:id` shows about a link: bucket `links`, key = upstream id. */
export const LinkStatusSchema = z.object({
  /** The bridge machine's state, or `Blocked`: connected, but off the mesh spanning tree. */
  state: z.string(),
  lastError: z.string().nullable(),
  forwarded: z.number().describe('messages forwarded and acknowledged upstream'),
  waiting: z.number().describe("messages in the link's window"),
  lagMs: z.number(),
  owner: z.string().describe('the supervisor replica that runs the link'),
  updatedAt: z.string(),
  /** The upstream server's instance id, when known: gateways use it for split horizon. */
  peerInstanceId: z.string().nullable(),
  /** Dropped by the duplicate guard (a loop between bridges). */
  duplicatesDropped: z.number(),
  /**
   * Messages queued for the link's local session across every gateway (also while the link is
   * down), as last read; null before the first read. Absent from older writers.
   */
  backlog: z.number().nullable().optional(),
  /** When the oldest of them was queued (ISO 8601); null when none waits. */
  oldestUnsentAt: z.string().nullable().optional(),
  /** Its age when the status was written (`updatedAt`), ms; null when none waits. */
  oldestUnsentMs: z.number().nullable().optional(),
  /**
   * Connected, yet the end-to-end canary has not come through for longer than its timeout: the
   * link carries nothing (supervisor/canary.ts). False while the canary is off or the link down.
   */
  silent: z.boolean().optional(),
  /** The last canary's round trip, local publish to its turn acknowledged upstream, ms. */
  canaryRoundTripMs: z.number().nullable().optional(),
  /** When the last canary came through (ISO 8601). */
  canaryOkAt: z.string().nullable().optional(),
})
export type LinkStatus = z.infer<typeof LinkStatusSchema>

export const LINKS_BUCKET = BUCKETS.links
export const LEASES_BUCKET = BUCKETS.leases
export const ROSTER_BUCKET = BUCKETS.supervisors

/** The local session's client id starts with this; the gateway recognises bridge sessions by it. */
export const BRIDGE_CLIENT_PREFIX = 'ub-bridge-'

/** Stable per upstream, so every owner resumes the same persistent session on the gateway. */
export const localClientId = (upstreamId: string): string => `${BRIDGE_CLIENT_PREFIX}${upstreamId}`

/**
 * The connection a link publishes what comes down on (bindings `in`, `both`): not its session,
 * whose socket the link pauses when its window going out is full; the local acknowledgements the
 * window coming in waits for must never wait behind that pause. The gateway treats what it
 * publishes as the session's own (no-local). Upstream ids are base62: no other id ends so.
 */
export const inboundClientIdOf = (sessionClientId: string): string =>
  `${sessionClientId}${INBOUND_SUFFIX}`
const INBOUND_SUFFIX = '-in'

/**
 * Did `originClientId` publish as the bridge session `clientId` (its own, or its inbound side)?
 * Asked on every delivery to a bridge session: compared in place, no string built.
 */
export const isBridgeOwn = (clientId: string, originClientId: string | undefined): boolean =>
  originClientId === clientId ||
  (originClientId !== undefined &&
    originClientId.length === clientId.length + INBOUND_SUFFIX.length &&
    originClientId.startsWith(clientId) &&
    originClientId.endsWith(INBOUND_SUFFIX))

/**
 * A link's end-to-end canary topic (supervisor/canary.ts). A `$` topic: no wildcard subscription
 * matches it [MQTT-4.7.2-1], and only the fabric's own supervisor may publish it.
 */
export const canaryTopic = (upstreamId: string): string => `${CANARY_PREFIX}${upstreamId}`
const CANARY_PREFIX = '$UB/canary/'

export const isCanaryTopic = (topic: string): boolean => topic.startsWith(CANARY_PREFIX)

/**
 * Upstream client id: `<our instance id>-<upstream id>`. On the upstream's gateways a message's
 * origin client id therefore names the instance it came from (split horizon).
 */
export const upstreamClientId = (instanceId: string, upstreamId: string): string =>
  `${instanceId}-${upstreamId}`
