import { z } from 'zod'
import { bool } from './config-values.ts'

/** The handshake API's and its poller's keys: polling, rate limits, Pending bounds, SSE, audit (config.ts composes them; README, Configuration). */
export const handshakeKeys = {
  allowSelfUpstream: bool
    .default(false)
    .describe(
      "let an upstream point at this instance's own handshake API (a fabric exercising itself, as the chaos harness does); refused with 400 self_upstream otherwise"
    ),
  handshakePollMs: z.coerce
    .number()
    .int()
    .min(10)
    .default(3_000)
    .describe(
      'ms between the first status polls of a Pending upstream; backs off to handshakeSlowPollMs'
    ),
  handshakeSlowPollMs: z.coerce
    .number()
    .int()
    .min(10)
    .default(30_000)
    .describe(
      'ms between polls of Approved and Active upstreams (to see a revocation); the Pending backoff cap'
    ),
  handshakeRatePerMin: z.coerce
    .number()
    .min(0.1)
    .default(10)
    .describe(
      'handshake requests per minute per source network (IPv6 /64, IPv4 address; token bucket); more get 429'
    ),
  handshakeRateBurst: z.coerce
    .number()
    .int()
    .min(1)
    .default(20)
    .describe('handshake requests a source IP may send at once'),
  handshakeRateMaxKeys: z.coerce
    .number()
    .int()
    .min(100)
    .default(10_000)
    .describe(
      'source networks the handshake rate limiter remembers; past it the least recently seen is forgotten (counted)'
    ),
  handshakePendingTtlMs: z.coerce
    .number()
    .int()
    .min(1_000)
    .default(7 * 24 * 3_600_000)
    .describe(
      'ms a handshake request may stay Pending; then it ends Expired (audited, actor system) and the downstream asks again'
    ),
  handshakeMaxPending: z.coerce
    .number()
    .int()
    .min(1)
    .default(1_000)
    .describe(
      'Pending handshake requests this server holds at most; more get 503 pending_capacity'
    ),
  handshakeMaxPendingPerInstance: z.coerce
    .number()
    .int()
    .min(1)
    .default(5)
    .describe('Pending requests per instance ID (one per secret); more get 429 too_many_pending'),
  handshakeMaxPendingPerNetwork: z.coerce
    .number()
    .int()
    .min(1)
    .default(10)
    .describe(
      'Pending requests per source network (IPv6 /64, IPv4 address); more get 429 too_many_pending'
    ),
  sseQueueMax: z.coerce
    .number()
    .int()
    .min(10)
    .default(1_000)
    .describe(
      'events waiting for one /api/v1/events client that does not read; past it the client is dropped (counted)'
    ),
  auditCheckMs: z.coerce
    .number()
    .int()
    .min(100)
    .default(60_000)
    .describe(
      'ms between checks of the transition hash chain (new rows, plus auditRecheckRows older ones); also at start'
    ),
  auditRecheckRows: z.coerce
    .number()
    .int()
    .min(0)
    .default(1_000)
    .describe(
      'older log rows re-checked per audit period, in a rotating window over the whole log'
    ),
}
