import type { Duplex } from 'node:stream'

/** The parts of an aedes client (lib/client.js) its read loop uses. */
export interface ReadingClient {
  conn: Duplex
  _paused?: boolean
  _parsingBatch: number
  _nextBatch: (err?: Error | null) => void
  _parser: { parse(buf: Buffer): unknown; on(event: 'packet', listener: () => void): unknown }
  emit(event: 'error', err: Error): boolean
}

/**
 * Read a client's packets a bounded batch at a time, each batch after the event loop's other
 * work (ARCHITECTURE.md §10).
 *
 * aedes (lib/client.js `nextBatch`) reads everything buffered on a socket and handles each packet
 * in it before it reads again, and when a batch is done it reads the next one at once, within
 * the same turn of the event loop. A subscriber acknowledging a backlog sends PUBACKs by the
 * thousand per read (4 bytes each), and each costs a queue erase: one such read held every other
 * client for ~100 ms (npm run bench -- isolation). Here a batch is at most `maxBatchBytes`, and
 * the next one waits for `setImmediate`, as a C broker's event loop serves each socket in turn.
 * The counting of packets in flight (`_parsingBatch`) is aedes' own, unchanged.
 */
export function readFairly(client: ReadingClient, maxBatchBytes: number): void {
  const { conn } = client
  conn.removeListener('readable', client._nextBatch)
  let scheduled = false
  let produced = 0
  client._parser.on('packet', () => produced++)

  function readBatch(): void {
    scheduled = false
    if (client._paused || client._parsingBatch > 0) return
    for (;;) {
      const n = Math.min(conn.readableLength, maxBatchBytes)
      const buf = (n > 0 ? conn.read(n) : conn.read()) as Buffer | null
      if (!buf) return
      const before = produced
      client._parser.parse(buf)
      // Packets began: their completion schedules the next batch. Only part of a packet: read on.
      if (produced !== before) return
    }
  }

  function schedule(): void {
    if (scheduled) return
    scheduled = true
    setImmediate(readBatch)
  }

  client._nextBatch = (err) => {
    if (err) {
      client.emit('error', err)
      return
    }
    if (client._paused) return
    client._parsingBatch--
    if (client._parsingBatch <= 0) {
      client._parsingBatch = 0
      schedule()
    }
  }
  conn.on('readable', client._nextBatch)
}
