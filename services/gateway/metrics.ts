import { Counter, Gauge, type Registry } from 'prom-client'
import type { GatewayCounters } from '../contracts/gateway-stats.ts'

export type { GatewayCounters, GatewayStats } from '../contracts/gateway-stats.ts'

/**
 * Register the gateway's metrics in `registry`; gauges are read at scrape time. Bytes are
 * PUBLISH payload bytes (aedes reads sockets itself, so wire bytes are not visible per packet).
 */
export function registerGatewayMetrics({
  registry,
  gatewayId,
  counters,
  read,
}: {
  registry: Registry
  gatewayId: string
  counters: GatewayCounters
  read: () => { clients: number; retained: number; mqQueued: number; queueDrains: number }
}): void {
  const labelNames = ['gateway'] as const
  const labels = { gateway: gatewayId }
  const gauge = (name: string, help: string, pick: () => number) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.set(labels, pick())
      },
    })
  // Counters mirror the plain numbers at scrape time, so the hot path only does `n++`.
  const counter = (name: string, help: string, key: keyof GatewayCounters) => {
    let last = 0
    return new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const now = counters[key]
        this.inc(labels, now - last)
        last = now
      },
    })
  }
  gauge(
    'ub_gateway_clients_connected',
    'MQTT clients connected to this gateway',
    () => read().clients
  )
  gauge(
    'ub_gateway_retained_messages',
    'retained messages (cluster-wide, as this gateway sees them)',
    () => read().retained
  )
  gauge(
    'ub_gateway_mq_queued',
    'messages from other gateways waiting for local dispatch',
    () => read().mqQueued
  )
  gauge(
    'ub_gateway_queue_drains',
    'persistent sessions catching up from their queue now (resumed, or at their pending bound)',
    () => read().queueDrains
  )
  counter('ub_gateway_messages_in_total', 'PUBLISH packets accepted from clients', 'messagesIn')
  counter('ub_gateway_messages_out_total', 'PUBLISH packets sent to clients', 'messagesOut')
  counter('ub_gateway_bytes_in_total', 'payload bytes of PUBLISH packets from clients', 'bytesIn')
  counter('ub_gateway_bytes_out_total', 'payload bytes of PUBLISH packets to clients', 'bytesOut')
  counter(
    'ub_gateway_publish_denied_total',
    'client PUBLISH packets dropped by the ACL',
    'publishDenied'
  )
  counter(
    'ub_gateway_subscribe_denied_total',
    'subscriptions refused by the ACL (SUBACK 0x80)',
    'subscribeDenied'
  )
  counter(
    'ub_gateway_delivery_denied_total',
    'deliveries to a bridge held back because the topic lies outside its grants',
    'deliveryDenied'
  )
  counter(
    'ub_gateway_connect_sources_evicted_total',
    'CONNECT budgets of sources forgotten past connectRateSources (least recently seen first)',
    'connectSourcesEvicted'
  )
  counter(
    'ub_gateway_retained_refused_total',
    'retained messages not kept because maxRetainedMessages or maxRetainedBytes was reached',
    'retainedRefused'
  )
  counter(
    'ub_gateway_inbound_qos2_exceeded_total',
    'connections cut for holding more than maxInboundQos2 QoS 2 PUBLISHes awaiting PUBREL',
    'inboundQos2Exceeded'
  )
  counter(
    'ub_gateway_sessions_expired_total',
    'persistent sessions ended after sessionExpirySec unseen (subscriptions and queue erased)',
    'sessionsExpired'
  )
  counter(
    'ub_gateway_te_errors_total',
    'thin-edge.io messages found malformed under teRoot (each explained on <teRoot>/errors, still delivered)',
    'teErrors'
  )
  counter('ub_gateway_auth_failures_total', 'CONNECTs refused by authentication', 'authFailures')
  registerDeliveryBoundMetrics(counter)
  registerQueueMetrics(counter)
  registerTwinMetrics(counter)
  registerFrontDoorMetrics(counter)
}

/** What a connection that does not take its deliveries meets (delivery-bounds.ts). */
function registerDeliveryBoundMetrics(
  counter: (name: string, help: string, key: keyof GatewayCounters) => unknown
): void {
  counter(
    'ub_gateway_slow_consumers_total',
    'connections cut because their pending deliveries passed maxPendingMessages/maxPendingBytes',
    'slowConsumers'
  )
  counter(
    'ub_gateway_write_stalls_total',
    'connections closed because their socket took nothing for writeStallSec while deliveries waited',
    'writeStalls'
  )
  counter(
    'ub_gateway_queue_catch_ups_total',
    'persistent sessions at maxPendingMessages/maxPendingBytes that caught up from their queue on the same connection instead of being cut',
    'queueCatchUps'
  )
  counter(
    'ub_gateway_qos0_dropped_total',
    'QoS 0 deliveries dropped for a connection whose pending deliveries were at maxPendingMessages/maxPendingBytes',
    'qos0Dropped'
  )
}

/** The thin-edge.io digital twin's feed to the store (edge/te-twin-feed.ts). */
function registerTwinMetrics(
  counter: (name: string, help: string, key: keyof GatewayCounters) => unknown
): void {
  counter(
    'ub_gateway_te_twin_dropped_total',
    'digital twin updates not sent to the store because 64 were outstanding',
    'teTwinDropped'
  )
  counter(
    'ub_gateway_te_twin_failed_total',
    'digital twin updates the store failed',
    'teTwinFailed'
  )
  counter(
    'ub_gateway_te_twin_refused_total',
    'thin-edge.io registrations refused: the digital twin keeps 100,000 entities at most',
    'teTwinRefused'
  )
}

/** The persistent sessions' queues: bounds reached, sweeps, and erases that waited for the bus. */
function registerQueueMetrics(
  counter: (name: string, help: string, key: keyof GatewayCounters) => unknown
): void {
  counter(
    'ub_gateway_drained_forgotten_total',
    'queued messages a resuming session got past the 100,000 its connection remembers (a live copy of one may repeat)',
    'drainedForgotten'
  )
  counter(
    'ub_gateway_queue_redelivered_total',
    "queued messages delivered by the sweep of a connected session's queue: their live copy never came (a NATS node died)",
    'queueRedelivered'
  )
  counter(
    'ub_gateway_queue_erase_deferred_total',
    'acknowledged queue entries whose erase failed (the bus in a fault) and was retried later',
    'queueEraseDeferred'
  )
  counter(
    'ub_gateway_queue_erase_dropped_total',
    'acknowledged queue entries whose failed erase was not kept for a retry (100,000 waiting): delivered again on reconnect',
    'queueEraseDropped'
  )
  counter(
    'ub_gateway_queue_write_retries_total',
    'queue writes the bus failed or left unanswered (a NATS node in a fault), tried again before the PUBLISH fails',
    'queueWriteRetries'
  )
  counter(
    'ub_gateway_queue_writes_held_total',
    'queue writes held back for a PUBACK from a subscriber connected here and keeping up (holdWritesMs)',
    'queueWritesHeld'
  )
  counter(
    'ub_gateway_queue_writes_saved_total',
    'held queue writes never made because the subscriber acknowledged first (nor their erase)',
    'queueWritesSaved'
  )
  counter(
    'ub_gateway_queue_writes_held_written_total',
    'held queue writes made after all: no PUBACK within holdWritesMs, the connection closed, or the gateway stopped',
    'queueWritesHeldWritten'
  )
  counter(
    'ub_gateway_queue_holds_refused_total',
    'queue writes that could have been held but went out at once: 50,000 were held on this gateway already',
    'queueHoldsRefused'
  )
  counter(
    'ub_gateway_ack_paces_forgotten_total',
    "sessions' acknowledgement pace forgotten past 100,000 followed (counted as fast until measured again)",
    'ackPacesForgotten'
  )
  counter(
    'ub_gateway_queue_full_total',
    'QoS 1/2 messages not queued for a persistent session whose queue was full (sessionMaxQueued, bridgeMaxQueued)',
    'queueFull'
  )
  counter(
    'ub_gateway_queue_depths_forgotten_total',
    'session queue depths dropped from memory past 100,000 followed sessions (counted again at their next message)',
    'queueDepthsForgotten'
  )
}

export function createCounters(): GatewayCounters {
  return {
    messagesIn: 0,
    messagesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    publishDenied: 0,
    subscribeDenied: 0,
    deliveryDenied: 0,
    slowConsumers: 0,
    writeStalls: 0,
    queueCatchUps: 0,
    qos0Dropped: 0,
    drainedForgotten: 0,
    queueRedelivered: 0,
    queueEraseDeferred: 0,
    queueEraseDropped: 0,
    queueWriteRetries: 0,
    queueWritesHeld: 0,
    queueWritesSaved: 0,
    queueWritesHeldWritten: 0,
    queueHoldsRefused: 0,
    ackPacesForgotten: 0,
    queueFull: 0,
    connectSourcesEvicted: 0,
    queueDepthsForgotten: 0,
    sessionsExpired: 0,
    inboundQos2Exceeded: 0,
    retainedRefused: 0,
    teErrors: 0,
    teTwinDropped: 0,
    teTwinFailed: 0,
    teTwinRefused: 0,
    authFailures: 0,
    authCacheHits: 0,
    authCacheEvictions: 0,
    authBusy: 0,
    scryptChecks: 0,
    storeAuthChecks: 0,
    connectRateLimited: 0,
    proxyRefused: 0,
    revokedDisconnects: 0,
    refusedWhileClosing: 0,
    busLossDisconnects: 0,
    teRetainedForgotten: 0,
  }
}

/** The CONNECT front door's counters: cache, semaphores, per-source budget, PROXY, revocation. */
function registerFrontDoorMetrics(
  counter: (name: string, help: string, key: keyof GatewayCounters) => unknown
): void {
  counter('ub_gateway_auth_cache_hits_total', 'CONNECTs answered from the cache', 'authCacheHits')
  counter(
    'ub_gateway_auth_cache_evictions_total',
    'cached authentication answers dropped because authCacheMaxEntries was reached',
    'authCacheEvictions'
  )
  counter(
    'ub_gateway_auth_busy_total',
    'CONNECTs closed without a CONNACK because authQueueMax checks were already waiting',
    'authBusy'
  )
  counter('ub_gateway_scrypt_checks_total', 'local-user password verifications run', 'scryptChecks')
  counter(
    'ub_gateway_store_auth_checks_total',
    'bridge credential checks sent to the binding store',
    'storeAuthChecks'
  )
  counter(
    'ub_gateway_connect_rate_limited_total',
    'CONNECTs closed without a CONNACK by the per-source (IPv4 address, IPv6 /64) budget',
    'connectRateLimited'
  )
  counter(
    'ub_gateway_proxy_refused_total',
    'connections closed for a malformed or missing-in-time PROXY protocol header',
    'proxyRefused'
  )
  counter(
    'ub_gateway_revoked_disconnects_total',
    'bridges disconnected because their request was revoked or withdrawn',
    'revokedDisconnects'
  )
  counter(
    'ub_gateway_refused_while_closing_total',
    'QoS 1/2 PUBLISHes left unacknowledged because the gateway was closing (sent again elsewhere)',
    'refusedWhileClosing'
  )
  counter(
    'ub_gateway_bus_loss_disconnects_total',
    'clients dropped because this gateway stopped reaching the bus (they move to one that does)',
    'busLossDisconnects'
  )
  counter(
    'ub_gateway_te_retained_forgotten_total',
    "retained topics a downstream's bridge published before its thin-edge.io mount was known, forgotten past 10,000 (not read into the twin when the mount comes)",
    'teRetainedForgotten'
  )
}
