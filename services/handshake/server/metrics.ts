import type { MiddlewareHandler } from 'hono'
import { routePath } from 'hono/route'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

export interface ApiMetrics {
  /** Counts and times every request by route pattern (not raw path: ids would explode the labels). */
  middleware: MiddlewareHandler
  sseClients: { inc(): void; dec(): void }
  guards: GuardMetrics
}

/** The handshake's bounds, each counted when hit (README.md, Limits). */
export interface GuardMetrics {
  rateLimited: Counter
  rateEvicted: Counter
  rateKeys: Gauge
  pendingRefused: Counter<'reason'>
  expired: Counter
  sseDropped: Counter
  sseQueued: Gauge
  waitersRefused: Counter
  signInLimited: Counter
  signInEvicted: Counter
  signInKeys: Gauge
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'])
const LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** The API's Prometheus metrics, in the registry `/metrics` serves (reused if already there). */
export function createApiMetrics(registry: Registry): ApiMetrics {
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined
  const requests =
    existing<Counter<'method' | 'route' | 'status'>>('ub_http_requests_total') ??
    new Counter({
      name: 'ub_http_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    })
  const duration =
    existing<Histogram<'method' | 'route'>>('ub_http_request_duration_seconds') ??
    new Histogram({
      name: 'ub_http_request_duration_seconds',
      help: 'Time to the response headers, by method and route pattern',
      labelNames: ['method', 'route'],
      buckets: LATENCY_BUCKETS_S,
      registers: [registry],
    })
  const sse =
    existing<Gauge>('ub_sse_clients') ??
    new Gauge({
      name: 'ub_sse_clients',
      help: 'Open /api/v1/events streams',
      registers: [registry],
    })

  const guards: GuardMetrics = {
    rateLimited: counter(
      registry,
      'ub_handshake_rate_limited_total',
      'Handshake requests refused by the per-network rate limit (429)'
    ),
    rateEvicted: counter(
      registry,
      'ub_handshake_rate_keys_evicted_total',
      'Source networks the rate limiter forgot to stay within handshakeRateMaxKeys'
    ),
    rateKeys: gauge(
      registry,
      'ub_handshake_rate_keys',
      'Source networks the handshake rate limiter remembers'
    ),
    pendingRefused:
      existing<Counter<'reason'>>('ub_handshake_pending_refused_total') ??
      new Counter({
        name: 'ub_handshake_pending_refused_total',
        help: 'Handshake requests refused by a Pending bound, by reason (instance, network, capacity)',
        labelNames: ['reason'],
        registers: [registry],
      }),
    expired: counter(
      registry,
      'ub_handshake_requests_expired_total',
      'Pending requests ended Expired after handshakePendingTtlMs'
    ),
    sseDropped: counter(
      registry,
      'ub_sse_clients_dropped_total',
      'Event-stream clients dropped because sseQueueMax events waited for them'
    ),
    sseQueued: gauge(
      registry,
      'ub_sse_queued_events',
      'Events waiting in all event-stream client queues'
    ),
    waitersRefused: counter(
      registry,
      'ub_handshake_status_waits_refused_total',
      'Long-polled handshake status requests answered at once: too many were waiting'
    ),
    signInLimited: counter(
      registry,
      'ub_console_sign_in_limited_total',
      'Console sign-ins refused (429) because their source spent its budget of failed attempts'
    ),
    signInEvicted: counter(
      registry,
      'ub_console_sign_in_sources_evicted_total',
      'Sources the sign-in limiter forgot to stay within its bound (least recently seen first)'
    ),
    signInKeys: gauge(
      registry,
      'ub_console_sign_in_sources',
      'Sources the console sign-in limiter remembers'
    ),
  }

  return {
    guards,
    middleware: async function apiMetrics(c, next) {
      const start = performance.now()
      await next()
      // The last matched route is the handler's pattern; '*' alone means no route matched.
      const pattern = routePath(c, -1)
      const route = pattern === '*' || pattern === '/*' ? 'unmatched' : pattern
      const method = METHODS.has(c.req.method) ? c.req.method : 'other'
      requests.inc({ method, route, status: String(c.res.status) })
      duration.observe({ method, route }, (performance.now() - start) / 1_000)
    },
    sseClients: { inc: () => sse.inc(), dec: () => sse.dec() },
  }
}

function counter(registry: Registry, name: string, help: string): Counter {
  return (
    (registry.getSingleMetric(name) as Counter | undefined) ??
    new Counter({ name, help, registers: [registry] })
  )
}

function gauge(registry: Registry, name: string, help: string): Gauge {
  return (
    (registry.getSingleMetric(name) as Gauge | undefined) ??
    new Gauge({ name, help, registers: [registry] })
  )
}
