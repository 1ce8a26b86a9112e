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
  read: () => { clients: number; retained: number; mqQueued: number }
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
  counter('ub_gateway_auth_failures_total', 'CONNECTs refused by authentication', 'authFailures')
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
    authFailures: 0,
  }
}
