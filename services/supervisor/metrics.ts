import { Gauge, type Registry } from 'prom-client'
import type { LinkCounters } from './bridge.ts'
import type { RunningLinks } from './link-runner.ts'
import type { BacklogWatch } from './backlog-watch.ts'

/** The Prometheus gauges of the running links, read from their counters on every scrape. */
export interface LinkMetrics {
  /** Take the gauges out of the registry. */
  close(): void
}

export function registerLinkMetrics(
  registry: Registry,
  running: RunningLinks,
  backlog: Pick<BacklogWatch, 'of' | 'failures'>
): LinkMetrics {
  const gauge = (name: string, help: string, pick: (c: LinkCounters, id: string) => number) => ({
    name,
    gauge: new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers: [],
      collect() {
        this.reset()
        for (const [id, r] of running) this.set({ upstream: id }, pick(r.link.status(), id))
      },
    }),
  })
  const metrics = [
    gauge('ub_bridge_forwarded', 'messages forwarded upstream by this replica', (c) => c.forwarded),
    gauge(
      'ub_bridge_waiting',
      'messages received and not yet acknowledged upstream',
      (c) => c.waiting
    ),
    gauge(
      'ub_bridge_duplicates_dropped',
      'messages the duplicate guard dropped (a bridge loop)',
      (c) => c.duplicatesDropped
    ),
    gauge('ub_bridge_lag_ms', 'age of the oldest waiting message, ms', (c) => c.lagMs),
    gauge('ub_bridge_forwarding', '1 while the link forwards', (c) =>
      c.state === 'Forwarding' ? 1 : 0
    ),
    gauge(
      'ub_bridge_silent',
      '1 while the link is connected but its end-to-end canary has not come through in time',
      (c) => (c.state === 'Forwarding' && c.canary?.silent ? 1 : 0)
    ),
    gauge(
      'ub_bridge_canary_round_trip_ms',
      "the last canary's round trip through the link, ms (0 before the first)",
      (c) => c.canary?.lastRoundTripMs ?? 0
    ),
    gauge(
      'ub_bridge_backlog',
      "messages queued for the link's local session across the gateways, as last read",
      (_c, id) => backlog.of(id)?.queued ?? 0
    ),
    gauge(
      'ub_bridge_oldest_unsent_ms',
      'age of the oldest message queued for the link, ms (0 when none)',
      (_c, id) => {
        const at = backlog.of(id)?.oldestAt
        return at == null ? 0 : Math.max(0, Date.now() - at)
      }
    ),
  ]
  metrics.push({
    name: 'ub_bridge_backlog_read_failures',
    gauge: new Gauge({
      name: 'ub_bridge_backlog_read_failures',
      help: "reads of the links' session backlog from the gateways that failed",
      registers: [],
      collect() {
        this.set(backlog.failures)
      },
    }),
  })
  // Another supervisor in the same process (tests) may have registered them already.
  for (const m of metrics) {
    if (!registry.getSingleMetric(m.name)) registry.registerMetric(m.gauge)
  }
  return {
    close() {
      for (const m of metrics) registry.removeSingleMetric(m.name)
    },
  }
}
