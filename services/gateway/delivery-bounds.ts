import type { Logger } from '../common/log.ts'
import { createConnackGate, type GatedClient } from './connack-gate.ts'
import type { GatewayCounters } from './metrics.ts'
import {
  createOutboundLimiter,
  type OutboundClient,
  type OutboundLimits,
  type Pending,
} from './outbound.ts'
import type { BusPersistence } from './persistence.ts'
import { createQueueCatchUp } from './queue-catch-up.ts'
import { createWriteStallWatch } from './write-stall.ts'

/**
 * What bounds a connection's deliveries, wired together (ARCHITECTURE.md §10): the outbound
 * limiter counts what waits for its socket, the connack gate holds a session catching up on its
 * queue, and a persistent session at the bound catches up from its queue instead of being cut
 * (queue-catch-up.ts). Whatever else passes the bound is cut as a slow consumer.
 */
export function boundDeliveries({
  persistence,
  limits,
  counters,
  log,
}: {
  persistence: BusPersistence
  limits: OutboundLimits & {
    /** A connection whose socket took nothing this long with deliveries waiting is closed. */
    writeStallMs: number
  }
  counters: GatewayCounters
  log: Logger
}) {
  const slowConsumer = (
    client: { id?: string | null; conn?: { destroy(): unknown } },
    pending: Pending
  ) => {
    counters.slowConsumers++
    log.warn(
      { clientId: client.id, ...pending },
      'client cut as a slow consumer: its pending deliveries passed the bound'
    )
    client.conn?.destroy()
  }
  const connackGate = createConnackGate({
    limits,
    onOverflow: slowConsumer,
    onDrainedForgotten: () => counters.drainedForgotten++,
    room: (client) => outbound.room(client as unknown as OutboundClient),
    drainAgain: (client) => catchUp.drainAgain(client),
  })
  const catchUp = createQueueCatchUp({
    connackGate,
    outbound: () => outbound,
    persistence: persistence.queueCatchUp,
    onCatchUp: () => counters.queueCatchUps++,
    log,
  })
  const stalls = createWriteStallWatch<OutboundClient>({
    stallMs: limits.writeStallMs,
    onStalled(client, stalledMs) {
      counters.writeStalls++
      log.warn(
        { clientId: client.id, stalledMs },
        'client cut: its socket took nothing while deliveries waited (writeStallSec)'
      )
      client.conn?.destroy()
    },
  })
  const outbound = createOutboundLimiter(
    limits,
    slowConsumer,
    () => counters.qos0Dropped++,
    catchUp.catchUpInstead,
    stalls
  )
  // aedes' drain of a resumed session tells the gate where it is (connack-gate.ts `drainOf`).
  const outgoingStream = persistence.outgoingStream
  persistence.outgoingStream = (client) =>
    outgoingStream(client, connackGate.drainOf(client as unknown as GatedClient))
  return { connackGate, outbound, stalls }
}
