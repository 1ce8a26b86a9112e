import mqtt, { MqttClient, type IClientOptions } from 'mqtt'
import type { Logger } from '../common/log.ts'
import type { LocalDialer } from './dial.ts'
import { localUrls } from './link-filters.ts'

/**
 * The connection the links' canaries are published on (canary.ts): one per supervisor replica,
 * to the local gateways, clean session, the internal credential. Not the link's own session: a
 * bridge-mode session never gets back what it published itself (no-local), so a canary sent on
 * it could never come back to it.
 */
export interface CanaryPublisher {
  /**
   * Publish at QoS 1; `done` on the gateway's PUBACK or a failure. False when not connected: no
   * canary is sent, so none can be waited for (a down local gateway shows in the link's state).
   */
  publish(topic: string, payload: Buffer, done: (err?: Error) => void): boolean
  /** Connect, if not yet: when the first link starts, so a supervisor without links has none. */
  open(): void
  close(): Promise<void>
}

export function startCanaryPublisher({
  url,
  username,
  password,
  clientId,
  dial,
  log,
}: {
  /** The local gateways, comma-separated; tried in turn. */
  url: string
  /** The gateway in this process, instead of `url` (dial.ts). */
  dial?: LocalDialer | undefined
  username: string
  password: string
  clientId: string
  log: Logger
}): CanaryPublisher {
  const servers = localUrls(url).map((u) => {
    const parsed = new URL(u)
    const protocol = parsed.protocol.replace(':', '') as 'mqtt' | 'mqtts' | 'ws' | 'wss'
    return { host: parsed.hostname, port: Number(parsed.port) || 1883, protocol }
  })
  let client: MqttClient | undefined
  let closed = false
  return {
    open() {
      if (client || closed) return
      const options: IClientOptions = {
        clientId,
        username,
        password,
        clean: true,
        protocolVersion: 4,
        reconnectPeriod: 1_000,
        connectTimeout: 5_000,
        queueQoSZero: false,
      }
      // MQTT.js calls the builder again on every reconnect: a fresh in-process connection each.
      client = dial ? new MqttClient(() => dial(), options) : mqtt.connect({ servers, ...options })
      client.on('error', (err) => log.debug({ err }, 'canary connection error'))
    },
    publish(topic, payload, done) {
      // Offline publishes are refused, never queued to go out late.
      if (!client?.connected) return false
      client.publish(topic, payload, { qos: 1 }, (err) => done(err ?? undefined))
      return true
    },
    async close() {
      closed = true
      await client?.endAsync(true)
    },
  }
}
