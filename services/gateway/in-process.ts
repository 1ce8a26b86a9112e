/**
 * A connection to the gateway's broker from inside its own process, without a socket: a pair of
 * streams where one end is handed to the broker exactly as an accepted TCP connection is (the
 * same `handle`: connection limit, CONNECT authentication, principal, packet-size and string
 * checks, fair reads, metrics) and the other end is the client's. The client still speaks MQTT
 * and still logs in: nothing is bypassed, only the loopback socket and the kernel are skipped.
 *
 * Backpressure is the streams': a write waits (its callback is held) while the other end's
 * readable buffer is full, so a paused reader pauses the writer as a full TCP window does.
 */
import { Duplex } from 'node:stream'
import { recordClientAddress } from './client-address.ts'
import type { Gateway } from './gateway.ts'

/** Opens one in-process connection to the gateway's broker; the caller speaks MQTT on it. */
export type InProcessDialer = () => Duplex

/**
 * What one end holds unread before its writer waits: about what a loopback TCP connection holds in
 * its kernel buffers (Linux grows them to MiBs). At 64 KiB a link pausing for a moment (its window
 * full) left the gateway's deliveries pending, and past `maxPendingMessages` the gateway cut it as
 * a slow consumer (a bench run at 64 B: one cut, 378 duplicates, a queue drain).
 */
const READ_HIGH_WATER_MARK = 1_048_576

const connectionError = (code: string, message: string): Error =>
  Object.assign(new Error(message), { code })

class End extends Duplex {
  peer!: End
  /** The peer's write, waiting for this end to be read below its high-water mark. */
  private waiting: ((err?: Error) => void) | undefined
  /** The end of this end's data was pushed (by the peer's end() or close). */
  private eof = false

  constructor() {
    // As a TCP socket: reading the end ends the writing side too.
    super({ allowHalfOpen: false, readableHighWaterMark: READ_HIGH_WATER_MARK })
  }

  override _read(): void {
    const done = this.waiting
    this.waiting = undefined
    done?.()
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error) => void): void {
    // Delivered on the next tick, never inside the writer's call: a socket's reader never runs
    // inside its writer's stack, and both the broker and the link rely on that.
    process.nextTick(() => this.peer.deliver(chunk, done))
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error) => void): void {
    // A corked run of writes (mqtt-packet writes a PUBLISH in several pieces) is read as one.
    const joined = Buffer.concat(chunks.map((c) => c.chunk))
    process.nextTick(() => this.peer.deliver(joined, done))
  }

  override _final(done: (err?: Error) => void): void {
    this.peer.endReading()
    done()
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    // Like a reset TCP connection: what the peer was still sending is lost, and it is told so.
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.(connectionError('ECONNRESET', 'in-process connection reset'))
    const { peer } = this
    if (!peer.destroyed) {
      // A close lets the peer read what was sent before it (a CONNACK refusal, say), then end;
      // a failure resets it.
      if (err) peer.destroy(connectionError('ECONNRESET', 'in-process connection reset'))
      else peer.endReading()
    }
    done(err)
  }

  /** The peer wrote `chunk`: readable here, its callback held while this end is full. */
  private deliver(chunk: Buffer, done: (err?: Error) => void): void {
    if (this.destroyed || this.eof) {
      return done(connectionError('EPIPE', 'in-process connection closed'))
    }
    if (this.push(chunk)) done()
    else this.waiting = done
  }

  private endReading(): void {
    if (this.eof || this.destroyed) return
    this.eof = true
    this.push(null)
  }
}

/** Two connected ends: what one writes the other reads. */
function endPair(): [End, End] {
  const a = new End()
  const b = new End()
  a.peer = b
  b.peer = a
  return [a, b]
}

/** The in-process ends still open, per gateway: a gateway's close resets them. */
const openEnds = new WeakMap<Gateway, Set<End>>()

/**
 * A dialer of in-process connections to `gateway`. The broker sees each as a loopback
 * connection (the peer is this very process), so the principal is what a client logging in
 * over 127.0.0.1 with the same credentials gets. After the gateway closed, a dial is refused.
 */
export function inProcessDialer(gateway: Gateway): InProcessDialer {
  const aedes = gateway.broker.aedes as unknown as NodeJS.EventEmitter & { closed: boolean }
  let ends = openEnds.get(gateway)
  if (!ends) {
    const set = new Set<End>()
    ends = set
    openEnds.set(gateway, set)
    // Connections that never CONNECTed are not aedes clients, and aedes's close leaves them.
    aedes.once('closed', () => {
      for (const end of set) end.destroy(connectionError('ECONNRESET', 'gateway closed'))
      set.clear()
    })
  }
  const open = ends
  return () => {
    const [client, server] = endPair()
    if (aedes.closed) {
      process.nextTick(() =>
        client.destroy(connectionError('ECONNREFUSED', 'the gateway is closed'))
      )
      return client
    }
    open.add(client) // bounded by the broker's connection limit: each is a connection it counts
    client.once('close', () => open.delete(client))
    recordClientAddress(server, '127.0.0.1')
    gateway.broker.handle(server)
    return client
  }
}
