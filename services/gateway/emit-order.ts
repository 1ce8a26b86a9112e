/** What of aedes (aedes.js) the ordering wraps: its publish, its counter, its mq's emit. */
export interface OrderedBroker {
  id: string
  counter: number
  publish(packet: unknown, client?: unknown, done?: unknown): void
  mq: { emit(packet: EmittedPacket, cb?: (err?: Error) => void): void }
}

interface EmittedPacket {
  brokerId?: string
  brokerCounter?: number
}

type Done = (err?: Error) => void

/**
 * A gateway's own messages leave in the order aedes numbered them.
 *
 * aedes gives each message its counter when `publish` starts (aedes-packet) and hands it to the
 * mq at the end of a chain whose length depends on the message: a QoS 1 message first waits for
 * its queue writes to persistent sessions (a NATS round trip each), a QoS 0 message does not. So
 * a QoS 0 message could leave ahead of a QoS 1 message numbered before it, and every subscriber
 * then dropped the QoS 1 one: aedes' per-client dedupe keeps the highest counter seen from each
 * broker and refuses anything lower (lib/client.js `dedupe`). Seen with a bridge forwarding a mix
 * of QoS 0 and 1 once PUBACKs waited for the queue writes (ack-after-store.ts).
 *
 * Here each counter `publish` takes is recorded, and the mq emits a message of this gateway
 * only once every lower recorded counter was emitted or its publish ended without one (a failed
 * queue write, a refused packet). Queue writes still run side by side; only the hand-offs to
 * the mq are put in order. Messages from other gateways pass through untouched.
 */
export function orderOwnEmits(broker: OrderedBroker): { held(): number } {
  // Counters of publishes under way, in the order they were taken (always increasing); `head`
  // indexes the lowest not yet settled.
  const order: number[] = []
  let head = 0
  const open = new Set<number>()
  const waiting = new Map<number, () => void>()

  function settle(counter: number): void {
    if (!open.delete(counter)) return
    for (;;) {
      while (head < order.length && !open.has(order[head]!)) head++
      if (head > 1_024) (order.splice(0, head), (head = 0)) // keep the array short
      const next = order[head]
      const go = next === undefined ? undefined : waiting.get(next)
      if (!go) return
      waiting.delete(next!)
      go() // emits `next` and settles it, which may release the one after
    }
  }

  const publish = broker.publish.bind(broker)
  broker.publish = (packet, client, done) => {
    const cb = (typeof client === 'function' ? client : done) as Done | undefined
    const predicted = broker.counter + 1 // aedes-packet takes `++broker.counter` synchronously
    order.push(predicted)
    open.add(predicted)
    const ended: Done = (err) => {
      settle(predicted) // emitted already, or never will be
      cb?.(err)
    }
    if (typeof client === 'function') publish(packet, ended)
    else publish(packet, client, ended)
    // No counter was taken (refused before it, or the packet carried its own): nothing to order.
    if (broker.counter !== predicted) settle(predicted)
  }

  const emit = broker.mq.emit.bind(broker.mq)
  broker.mq.emit = (packet, cb) => {
    const c = packet.brokerCounter
    if (packet.brokerId !== broker.id || c === undefined || !open.has(c)) return emit(packet, cb)
    const send = () => {
      emit(packet, cb)
      settle(c)
    }
    if (order[head] === c) send()
    else waiting.set(c, send)
  }

  return { held: () => waiting.size }
}
