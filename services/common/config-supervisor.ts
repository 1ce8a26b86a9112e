import { z } from 'zod'
import { bool, optionalString } from './config-values.ts'

/** The bridge supervisor's keys: the local broker, windows, leases, the mesh (config.ts composes them; README, Configuration). */
export const supervisorKeys = {
  localBrokerUrl: optionalString.describe(
    'the gateways the bridge supervisor reads from, comma-separated, tried in turn after a failure (every gateway of a fabric, or their load balancer); default mqtt://127.0.0.1:<mqttPort>'
  ),
  bridgeWindow: z.coerce
    .number()
    .int()
    .min(1)
    .max(65_000)
    .default(256)
    .describe('QoS 1 messages in flight per bridge link; 2× this many wait in memory at most'),
  leaseTtlMs: z.coerce
    .number()
    .int()
    .min(600)
    .default(3_000)
    .describe(
      'ms a bridge ownership lease lives unrenewed (renewed every third); failover takes about this long'
    ),
  backoffMaxMs: z.coerce
    .number()
    .int()
    .min(100)
    .default(8_000) // machines/bridge.ts DEFAULT_BACKOFF_MAX_MS
    .describe(
      "ms cap of a bridge link's reconnect backoff (each wait is uniform in [cap/2, cap]): a link resumes at most this long after its upstream is back"
    ),
  bridgeDupGuard: bool
    .default(false)
    .describe(
      'drop a message seen >20 times in 200 ms on one link (stray bridge loops); off: an identical fast stream is legitimate QoS 1 data'
    ),
  bridgeCanaryMs: z.coerce
    .number()
    .int()
    .min(0)
    .max(3_600_000)
    .default(30_000)
    .describe(
      "ms between a bridge link's end-to-end canaries (a QoS 1 message through its local session and window); one not through after two intervals flags the link silent; 0 = off"
    ),
  topologyIntervalMs: z.coerce
    .number()
    .int()
    .min(50)
    .default(5_000)
    .describe(
      'ms between mesh topology exchanges on each handshake link; adverts live 6× this, a silent neighbour is dropped after 3×'
    ),
  meshTree: bool
    .default(true)
    .describe(
      'block bridge links that are not on the mesh spanning tree (off: topology is still exchanged, every link forwards)'
    ),
  meshClockSkewMs: z.coerce
    .number()
    .int()
    .min(1_000)
    .max(86_400_000)
    .default(300_000)
    .describe(
      "ms a topology advert's version (its origin's clock) may lie ahead of ours, or behind by more than its lifetime; outside it is refused and counted"
    ),
  supervisorId: optionalString.describe(
    "this supervisor replica's name in leases; unique per replica; made at start when absent"
  ),
}
