import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { decodeJson, encodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'

/** Per-gateway numbers, kept as plain counters so `gateway.stats` can answer without prom-client. */
export const GatewayCountersSchema = z.object({
  messagesIn: z.number().int(),
  messagesOut: z.number().int(),
  bytesIn: z.number().int().describe('PUBLISH payload bytes received'),
  bytesOut: z.number().int().describe('PUBLISH payload bytes sent'),
  publishDenied: z.number().int(),
  subscribeDenied: z.number().int(),
  deliveryDenied: z
    .number()
    .int()
    .describe('deliveries held back from a bridge because the topic lies outside its grants'),
  inboundQos2Exceeded: z
    .number()
    .int()
    .describe('connections cut for holding more QoS 2 PUBLISHes awaiting PUBREL than the bound'),
  sessionsExpired: z
    .number()
    .int()
    .describe('persistent sessions ended after being unseen for sessionExpirySec'),
  queueDepthsForgotten: z
    .number()
    .int()
    .describe('session queue depths forgotten to bound how many one gateway follows'),
  connectSourcesEvicted: z
    .number()
    .int()
    .describe('per-source CONNECT budgets forgotten past the bound on sources'),
  queueFull: z
    .number()
    .int()
    .describe('QoS > 0 messages not queued for a persistent session whose queue was full'),
  retainedRefused: z
    .number()
    .int()
    .describe('retained messages not kept because the retained bound was reached'),
  slowConsumers: z
    .number()
    .int()
    .describe('connections cut because their pending deliveries passed the bound'),
  writeStalls: z
    .number()
    .int()
    .describe(
      'connections closed because their socket took nothing for a while as deliveries waited'
    ),
  queueCatchUps: z
    .number()
    .int()
    .describe(
      'persistent sessions at the pending bound that caught up from their queue on the same connection instead of being cut'
    ),
  qos0Dropped: z
    .number()
    .int()
    .describe(
      'QoS 0 deliveries dropped for a connection whose pending deliveries were at the bound'
    ),
  drainedForgotten: z
    .number()
    .int()
    .describe(
      'queued messages a resuming session got that its connection did not remember (past 100,000): a live copy of one may be sent twice'
    ),
  queueRedelivered: z
    .number()
    .int()
    .describe(
      "queued messages the sweep of a connected session's queue delivered because their live copy never came"
    ),
  queueEraseDeferred: z
    .number()
    .int()
    .describe('acknowledged queue entries whose erase failed and was retried later'),
  queueEraseDropped: z
    .number()
    .int()
    .describe(
      'acknowledged queue entries whose failed erase was not kept for a retry (bound reached)'
    ),
  queueWriteRetries: z
    .number()
    .int()
    .default(0)
    .describe('queue writes tried again after the bus failed them'),
  queueWritesHeld: z
    .number()
    .int()
    .default(0)
    .describe('queue writes held for a PUBACK from a subscriber online and keeping up'),
  queueWritesSaved: z
    .number()
    .int()
    .default(0)
    .describe('held queue writes never made: the subscriber acknowledged first'),
  queueWritesHeldWritten: z
    .number()
    .int()
    .default(0)
    .describe('held queue writes made after all (no PUBACK in time, connection closed)'),
  queueHoldsRefused: z
    .number()
    .int()
    .default(0)
    .describe('queue writes not held because 50,000 were held on the gateway already'),
  ackPacesForgotten: z
    .number()
    .int()
    .default(0)
    .describe("sessions' acknowledgement pace forgotten past 100,000 followed"),
  teErrors: z
    .number()
    .int()
    .describe('thin-edge.io messages found malformed (each explained on <teRoot>/errors)'),
  teTwinDropped: z
    .number()
    .int()
    .describe('digital twin updates not sent to the store: 64 were outstanding already'),
  teTwinFailed: z.number().int().describe('digital twin updates the store failed'),
  teTwinRefused: z
    .number()
    .int()
    .describe('thin-edge.io registrations the store refused: it keeps 100,000 entities at most'),
  authFailures: z.number().int(),
  // The CONNECT front door (services/gateway/authenticator.ts, listeners.ts, revocation.ts).
  authCacheHits: z.number().int().describe('CONNECTs answered from the recent-answers cache'),
  authCacheEvictions: z
    .number()
    .int()
    .describe('cached answers dropped because the cache was full'),
  authBusy: z
    .number()
    .int()
    .describe('CONNECTs closed without a CONNACK: the check queue was full'),
  scryptChecks: z.number().int().describe('local-user password verifications run'),
  storeAuthChecks: z.number().int().describe('bridge credential checks sent to the store'),
  connectRateLimited: z
    .number()
    .int()
    .describe('CONNECTs closed without a CONNACK by the per-source budget'),
  proxyRefused: z.number().int().describe('connections closed for a bad or late PROXY header'),
  revokedDisconnects: z
    .number()
    .int()
    .describe('bridges disconnected because their request is no longer Accepted'),
  // Defaulted: a gateway of the previous version, met during a rolling upgrade, does not send it.
  refusedWhileClosing: z
    .number()
    .int()
    .default(0)
    .describe('QoS 1/2 PUBLISHes left unacknowledged while the gateway closed'),
  busLossDisconnects: z
    .number()
    .int()
    .default(0)
    .describe('clients dropped because the gateway stopped reaching the bus'),
  teRetainedForgotten: z
    .number()
    .int()
    .default(0)
    .describe("retained topics under a downstream's future mount forgotten past the bound"),
})
export type GatewayCounters = z.infer<typeof GatewayCountersSchema>

export const GatewayStatsSchema = z.object({
  gatewayId: z.string(),
  brokerId: z.string(),
  clients: z.number().int(),
  retained: z.number().int(),
  ...GatewayCountersSchema.shape,
  /** Messages from other gateways waiting for a local dispatch slot. */
  mqQueued: z.number().int(),
  /** Persistent sessions catching up from their queue now (0 from a gateway that predates it). */
  queueDrains: z.number().int().default(0),
  ports: z.record(z.string(), z.number().int()),
  uptimeMs: z.number(),
})
export type GatewayStats = z.infer<typeof GatewayStatsSchema>

/**
 * Stats on the bus. Every gateway subscribes (no queue group) to `gateway.stats`; a caller
 * publishes `{replyTo}` there and each gateway publishes its own `GatewayStats` to `replyTo`.
 * One gateway alone answers request/reply on `gateway.<gatewayToken>.stats`.
 */
export const STATS_SUBJECT = 'gateway.stats'
export const gatewayStatsSubject = (gatewayId: string): string =>
  `gateway.${statsToken(gatewayId)}.stats`
const DEFAULT_COLLECT_MS = 300 // 300 ms: a round trip on one NATS is ~1 ms; gateways answer at once

/** A gateway id as one NATS token. */
export function statsToken(gatewayId: string): string {
  return gatewayId.replace(/[^A-Za-z0-9_-]/g, '_')
}

export async function serveStats(
  bus: Bus,
  gatewayId: string,
  read: () => GatewayStats
): Promise<Subscription[]> {
  return Promise.all([
    bus.subscribe(STATS_SUBJECT, (msg) => {
      const { replyTo } = decodeJson<{ replyTo?: unknown }>(msg.data)
      if (typeof replyTo === 'string' && replyTo.startsWith(`${STATS_SUBJECT}.reply.`)) {
        bus.publish(replyTo, encodeJson(read()))
      }
    }),
    bus.serve(gatewayStatsSubject(gatewayId), async () => encodeJson(read())),
  ])
}

/** Ask every gateway on the bus for its stats; those that answer within `timeoutMs`, by id. */
export async function collectGatewayStats(
  bus: Bus,
  { timeoutMs = DEFAULT_COLLECT_MS }: { timeoutMs?: number } = {}
): Promise<GatewayStats[]> {
  const replyTo = `${STATS_SUBJECT}.reply.${randomBytes(8).toString('hex')}`
  const got: GatewayStats[] = []
  const sub = await bus.subscribe(replyTo, (msg) => got.push(decodeJson<GatewayStats>(msg.data)))
  try {
    bus.publish(STATS_SUBJECT, encodeJson({ replyTo }))
    await new Promise((r) => setTimeout(r, timeoutMs))
  } finally {
    await sub.unsubscribe()
  }
  return got.sort((a, b) => a.gatewayId.localeCompare(b.gatewayId))
}
