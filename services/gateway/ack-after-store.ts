import type { Duplex } from 'node:stream'
import * as mqttPacket from 'mqtt-packet'

type Done = (err?: Error | null) => void

/** The parts of an aedes client (lib/client.js) and its broker this module uses. */
export interface AckingClient {
  conn: Duplex
  connecting?: boolean
  connected: boolean
  connackSent?: boolean
  errored?: boolean
  _parsingBatch: number
  _nextBatch: Done
  _parser: {
    listeners(event: 'packet'): Array<(packet: unknown) => void>
    removeListener(event: 'packet', listener: (packet: unknown) => void): unknown
    on(event: 'packet', listener: (packet: InboundPublish) => void): unknown
  }
  waitForDrain(done: Done): void
  _keepaliveInterval: number
  _keepaliveTimer: { refresh(): unknown } | null
  broker: {
    id: string
    /** aedes-packet numbers each message `++counter`, synchronously in `publish`. */
    counter: number
    maxTopicLevels?: number
    authorizePublish(client: AckingClient, packet: InboundPublish, done: Done): void
    publish(packet: InboundPublish, client: AckingClient, done: Done): void
  }
}

interface InboundPublish {
  cmd: string
  qos?: number
  topic?: string
  messageId?: number
}

/**
 * Acknowledge a QoS 1 PUBLISH once the gateway has stored and dispatched it, not before.
 *
 * aedes 1.2 (lib/handlers/publish.js) writes the PUBACK first and publishes once it is written.
 * When the write to a persistent session's queue then failed (a NATS node died under the request,
 * a partition), the message was neither queued nor delivered, and the publisher, holding its
 * PUBACK, never sent it again: acknowledged messages were lost on every NATS node loss. Here the
 * PUBACK waits for aedes' whole publish (retained store, queue writes for persistent sessions,
 * dispatch); if any part fails, the client is disconnected without it and sends the message again
 * when it reconnects [MQTT-4.3.2-2]: at least once, as QoS 1 promises.
 *
 * aedes' parser listener (its `enqueue`) is kept for every other packet, and for a PUBLISH that
 * comes before the CONNACK, which aedes queues for after it.
 */
export function ackAfterStore(
  client: AckingClient,
  expectWrites?: ExpectWrites
): { inFlight(): number } {
  const parser = client._parser
  const [aedesEnqueue] = parser.listeners('packet')
  if (!aedesEnqueue) throw new Error('aedes client has no packet listener to wrap')
  parser.removeListener('packet', aedesEnqueue)
  const inOrder = orderedAcks(client)
  parser.on('packet', function (this: unknown, packet) {
    if (packet.cmd !== 'publish' || packet.qos !== 1 || !client.connackSent)
      return aedesEnqueue.call(this, packet)
    client._parsingBatch++ // as aedes' enqueue does: this packet is in flight until `_nextBatch`
    // As aedes' handle() does for every packet it reads: a publisher busy with QoS 1 sends no
    // PINGREQ (MQTT.js reschedules its ping on every packet it sends), so without this it was
    // cut for "keep alive timeout" 1.5 × keep-alive after its CONNECT, with its window unacked.
    if (client._keepaliveInterval > 0) client._keepaliveTimer?.refresh()
    publishThenAck(client, packet, inOrder.ack(packet.messageId, client._nextBatch), expectWrites)
  })
  return { inFlight: inOrder.inFlight }
}

/**
 * PUBACKs in the order their PUBLISHes came [MQTT-4.6.0-2], whichever publish ends first: a
 * message with queue writes to make ends after one without, so each ack waits for the ones
 * before it. `ack` returns, for one PUBLISH, what its publish calls when it ended; `inFlight` counts
 * the PUBLISHes not yet acknowledged.
 */
function orderedAcks(client: AckingClient) {
  const line: Array<{ messageId: number | undefined; ended: boolean; done: Done }> = []
  function writeReady(): void {
    while (line[0]?.ended) {
      const { messageId, done } = line.shift()!
      writePuback(client, messageId, done)
    }
  }
  const ack = (messageId: number | undefined, done: Done): Done => {
    const entry = { messageId, ended: false, done }
    line.push(entry)
    return (err) => {
      if (err) {
        // The connection is closed for it: no PUBACK, and the ones behind it are resent too.
        line.splice(line.indexOf(entry), 1)
        return done(err)
      }
      entry.ended = true
      writeReady()
    }
  }
  return { ack, inFlight: () => line.length }
}

/**
 * Queue writes the persistence may hold for this message until its subscribers acknowledge
 * (persistence/held-writes.ts), named by its broker id and counter. Absent: nothing is held.
 */
export type ExpectWrites = (
  brokerId: string,
  brokerCounter: number
) => {
  settled(): Promise<void> | undefined
  forget(): void
}

function publishThenAck(
  client: AckingClient,
  packet: InboundPublish,
  ended: Done,
  expectWrites: ExpectWrites | undefined
): void {
  const refused = invalidTopic(packet.topic, client.broker.maxTopicLevels)
  if (refused) return ended(new Error(refused))
  const broker = client.broker
  broker.authorizePublish(client, packet, (err) => {
    if (err) return ended(err)
    if (!expectWrites) return broker.publish(packet, client, ended)
    const counter = broker.counter + 1
    const writes = expectWrites(broker.id, counter)
    broker.publish(packet, client, (err) => {
      if (err) return (writes.forget(), ended(err))
      const settled = writes.settled()
      if (settled) settled.then(() => ended(), ended)
      else ended()
    })
    if (broker.counter !== counter) writes.forget() // no message numbered: nothing held for it
  })
}

/** aedes' own checks of a PUBLISH's topic (lib/handlers/publish.js), in the same words. */
function invalidTopic(topic: string | undefined, maxLevels = Infinity): string | undefined {
  if (!topic) return 'empty topic not allowed in PUBLISH'
  if (topic.includes('#')) return '# is not allowed in PUBLISH'
  if (topic.includes('+')) return '+ is not allowed in PUBLISH'
  let levels = 1
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) levels++
  return levels > maxLevels ? 'topic has too many levels' : undefined
}

function writePuback(client: AckingClient, messageId: number | undefined, done: Done): void {
  // Closed meanwhile: the client sends it again on its next connection.
  // aedes' `write` test: a resumed session is still `connecting` while its queue drains.
  if (!(client.connecting || client.connected) || client.conn.destroyed) {
    setImmediate(done)
    return
  }
  const written = mqttPacket.writeToStream(
    { cmd: 'puback', messageId: messageId ?? 0 },
    client.conn as unknown as Parameters<typeof mqttPacket.writeToStream>[1]
  )
  if (!written && !client.errored) return client.waitForDrain(done)
  setImmediate(done)
}
