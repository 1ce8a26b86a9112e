import type { MqttSession, MqttSessionOptions } from './mqtt-session.ts'

/**
 * A bridge link's health on thin-edge's device topic schema, as thin-edge's own bridges report
 * theirs: a service of the main device, `<root>/device/main/service/ub-bridge-<upstream id>`,
 * whose `status/health` is retained, `up` once the link forwards, `down` when it stops and, by
 * the local session's will, when the supervisor dies. A health check on the service or on the
 * main device (`…/cmd/health/check`) is answered by publishing the health again.
 */
export interface LinkHealth {
  /** The local session's will: `down`, retained. */
  will: NonNullable<MqttSessionOptions['will']>
  /** The health-check topics the local session subscribes to. */
  checkFilters: string[]
  isCheck(topic: string): boolean
  readonly topic: string
  /** The health as it is published now. */
  payload(): Buffer
  /** Publish the health: `up` as given, or as last reported (a health check). */
  report(session: MqttSession | undefined, up?: boolean): void
}

export function linkHealth(root: string, upstreamId: string): LinkHealth {
  const service = `${root}/device/main/service/ub-bridge-${upstreamId}`
  const topic = `${service}/status/health`
  const payload = (status: 'up' | 'down') =>
    Buffer.from(JSON.stringify({ status, time: Math.floor(Date.now() / 1_000) }))
  const checkFilters = [`${service}/cmd/health/check`, `${root}/device/main///cmd/health/check`]
  let lastUp = false
  return {
    will: { topic, payload: Buffer.from('{"status":"down"}'), qos: 1, retain: true },
    checkFilters,
    isCheck: (t) => checkFilters.includes(t),
    topic,
    payload: () => payload(lastUp ? 'up' : 'down'),
    report(session, up) {
      if (up !== undefined) lastUp = up
      // Best effort: a failed report is corrected by the will or the next connect.
      session?.publish(topic, payload(lastUp ? 'up' : 'down'), { qos: 1, retain: true }, () => {})
    },
  }
}
