import type { MqttMessage, MqttSession } from './mqtt-session.ts'
import type { UpstreamSession } from './upstream-client.ts'
import { createForwardWindow, type ForwardWindow } from './window.ts'

/**
 * What comes down a link (bindings `in` and `both`): the mirror of the forwarding window. Each
 * upstream message is published to the local gateway at its QoS, and acknowledged upstream only
 * once the local gateway acknowledged it, in the order it came: a link cut, an upstream restart
 * or a supervisor killed in between leaves it in the upstream's queue for the link's persistent
 * session, to come again. Past `2 × size` waiting, the upstream socket is paused.
 */
export interface Inbound {
  readonly window: ForwardWindow
  /** A message from upstream (possibly before the upstream connect resolved). */
  onMessage(msg: MqttMessage, upstream?: UpstreamSession): void
  /** The upstream connection, once connected: where acknowledgements go. */
  attachUpstream(session: UpstreamSession): void
  /** The local session, once connected: messages that came before it wait for it. */
  attachLocal(session: MqttSession): void
}

export function createInbound({
  size,
  toLocal,
  rewrite,
  onUnrouted,
  onError,
}: {
  size: number
  /** The local topic for an upstream one, or null when no binding brings it in. */
  toLocal: (topic: string) => string | null
  /** The payload as it goes out locally (a te/ command's tedgeUrl, file-urls.ts). */
  rewrite?: (localTopic: string, payload: Buffer) => Buffer
  onUnrouted: () => void
  onError: (err: Error) => void
}): Inbound {
  let local: MqttSession | undefined
  let upstream: UpstreamSession | undefined
  // Publishes that came before the local session; bounded: the window pauses the upstream.
  const beforeLocal: Array<() => void> = []
  const window = createForwardWindow({
    size,
    publish(topic, payload, opts, done) {
      const go = () => local!.publish(topic, payload, opts, done)
      if (local) go()
      else beforeLocal.push(go)
    },
    ack: (id) => upstream?.ack(id),
    pause: () => upstream?.pause(),
    resume: () => upstream?.resume(),
    onError,
  })
  return {
    window,
    onMessage(msg, session) {
      upstream ??= session
      const target = toLocal(msg.topic)
      // Acknowledged in turn like any other, but not published: no binding brings it in now.
      if (target === null) {
        onUnrouted()
        return window.push(msg, [])
      }
      const payload = rewrite ? rewrite(target, msg.payload) : msg.payload
      window.push(payload === msg.payload ? msg : { ...msg, payload }, [target])
    },
    attachUpstream(session) {
      upstream = session
    },
    attachLocal(session) {
      local = session
      for (const go of beforeLocal.splice(0)) go()
    },
  }
}
