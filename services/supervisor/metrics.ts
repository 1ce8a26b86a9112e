import { Gauge, type Registry } from 'prom-client'
import type { LinkCounters } from './bridge.ts'
import type { RunningLinks } from './link-runner.ts'

/** The Prometheus gauges of the running links, read from their counters on every scrape. */
export interface LinkMetrics {
  /** Take the gauges out of the registry. */
  close(): void
}

export function registerLinkMetrics(registry: Registry, running: RunningLinks): LinkMetrics {
  const gauge = (name: string, help: string, pick: (c: LinkCounters) => number) => ({
    name,
    gauge: new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers: [],
      collect() {
        this.reset()
        for (const [id, r] of running) this.set({ upstream: id }, pick(r.link.status()))
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
  ]
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
