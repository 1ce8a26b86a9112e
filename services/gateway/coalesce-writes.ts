import type { Duplex } from 'node:stream'

type WriteCallback = (err?: Error | null) => void

/**
 * Everything written to one connection in one turn of the event loop leaves as one buffer.
 *
 * mqtt-packet writes a PUBLISH in six pieces (header, length, topic length, topic, id, payload),
 * each a `write` through the stream's machinery, and corks only until the next tick, so each
 * delivery was a syscall of its own: a third of a loaded gateway's CPU went to `writev`. Corking
 * for the whole turn made that one writev per connection per turn, but of six entries per packet,
 * each buffered, encoded (the topic is a string) and called back on its own. Here the pieces of a
 * turn are gathered into one buffer at `setImmediate` (before the loop waits for I/O again) and
 * handed to the stream as one write: a lone packet still leaves within its turn, a loaded gateway
 * sends a burst per socket per turn, as Mosquitto's loop does.
 *
 * Backpressure is kept: `write` answers false once what waits here and in the stream reaches the
 * stream's high-water mark, and 'drain' follows once it is written, emitted here if the stream
 * took the burst without ever having refused a write.
 */
export function coalesceWrites(conn: Duplex): void {
  const write = conn.write.bind(conn) as (chunk: Buffer, cb?: WriteCallback) => boolean
  const end = conn.end
  let pieces: Buffer[] = []
  let bytes = 0
  let callbacks: WriteCallback[] | undefined
  let scheduled = false
  let owesDrain = false

  const flush = (): void => {
    scheduled = false
    if (pieces.length === 0) return
    const burst = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, bytes)
    const waiting = callbacks
    pieces = []
    bytes = 0
    callbacks = undefined
    const took = write(
      burst,
      waiting &&
        ((err) => {
          for (const cb of waiting) cb(err)
        })
    )
    if (owesDrain) {
      owesDrain = false
      // Refused here but taken by the stream: it will not emit 'drain', so a writer waiting for
      // it (aedes' waitForDrain) is told here. Refused by the stream too: it emits its own.
      if (took) process.nextTick(() => conn.emit('drain'))
    }
  }

  conn.write = function (
    chunk: unknown,
    encoding?: BufferEncoding | WriteCallback,
    cb?: WriteCallback
  ): boolean {
    if (typeof encoding === 'function') {
      cb = encoding
      encoding = undefined
    }
    // Ended or destroyed: the stream reports it (an error, a callback) as it would have.
    if (conn.writableEnded || conn.destroyed) return write(chunk as Buffer, cb)
    const piece =
      typeof chunk === 'string'
        ? Buffer.from(chunk, encoding ?? 'utf8')
        : Buffer.isBuffer(chunk)
          ? chunk
          : Buffer.from(chunk as Uint8Array)
    pieces.push(piece)
    bytes += piece.length
    if (cb) (callbacks ??= []).push(cb)
    if (!scheduled) {
      scheduled = true
      setImmediate(flush)
    }
    const below = conn.writableLength + bytes < conn.writableHighWaterMark
    if (!below) owesDrain = true
    return below
  } as Duplex['write']

  // mqtt-packet corks each packet until the next tick; the pieces wait here instead, and a cork
  // left on the stream would only hold the burst back from the socket.
  conn.cork = () => {}
  conn.uncork = () => {}

  conn.end = function (this: Duplex, ...args: unknown[]) {
    flush()
    return (end as (...a: unknown[]) => Duplex).apply(this, args)
  } as Duplex['end']
}
