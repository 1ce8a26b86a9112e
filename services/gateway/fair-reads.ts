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
 * Read a client's packets a bounded number at a time, then let the event loop serve the others
 * (ARCHITECTURE.md §10).
 *
 * aedes (lib/client.js `nextBatch`) reads everything buffered on a socket and handles each packet
 * in it before it reads again, and when a batch is done it reads the next one at once, within
 * the same turn of the event loop. A subscriber acknowledging a backlog sends PUBACKs by the
 * thousand per read (4 bytes each), and each costs a queue erase: one such read held every other
 * client for ~100 ms (npm run bench -- isolation). Here a client handles at most
 * `packetsPerTurn` packets before its next read waits for `setImmediate`, as a C broker's event
 * loop serves each socket in turn; each read is sized from the client's recent packet size, so a
 * read of tiny PUBACKs is small and a read of large PUBLISHes is not. Below the budget reads
 * follow each other at once, as in aedes, so a fast publisher loses nothing to the fairness.
 * The counting of packets in flight (`_parsingBatch`) is aedes' own, unchanged.
 */
export function readFairly(client: ReadingClient, packetsPerTurn: number): void {
  const { conn } = client
  conn.removeListener('readable', client._nextBatch)
  let scheduled = false
  let produced = 0
  let thisTurn = 0
  let bytesPerPacket = 64 // a running estimate, to size the next read
  client._parser.on('packet', () => produced++)

  let parsing = false

  function readBatch(): void {
    scheduled = false
    while (!client._paused && client._parsingBatch <= 0) {
      if (thisTurn >= packetsPerTurn) {
        thisTurn = 0
        scheduled = true
        setImmediate(readBatch)
        return
      }
      const want = Math.min(
        MAX_READ_BYTES,
        Math.max(MIN_READ_BYTES, Math.round(bytesPerPacket * (packetsPerTurn - thisTurn)))
      )
      const n = Math.min(conn.readableLength, want)
      const buf = (n > 0 ? conn.read(n) : conn.read()) as Buffer | null
      if (!buf) return
      const before = produced
      // Handlers that finish at once call `_nextBatch` from inside parse(); the parser is not
      // re-entrant, so this loop reads on instead.
      parsing = true
      try {
        client._parser.parse(buf)
      } finally {
        parsing = false
      }
      const packets = produced - before
      if (packets > 0) {
        bytesPerPacket = (bytesPerPacket + buf.length / packets) / 2
        thisTurn += packets
      }
      // Packets still in progress read on when they finish; otherwise (done, or only part of a
      // packet) the loop reads on now.
    }
  }

  function readNext(): void {
    if (!scheduled && !parsing) readBatch()
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
      readNext()
    }
  }
  conn.on('readable', client._nextBatch)
}

const MIN_READ_BYTES = 512
const MAX_READ_BYTES = 65_536 // what one socket read gives at most
