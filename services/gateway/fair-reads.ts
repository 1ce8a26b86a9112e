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
 * client for ~100 ms (npm run bench -- isolation). Here each read is sized for about
 * `packetsPerTurn` packets from the client's recent packet size (a read of tiny PUBACKs is small,
 * one of large PUBLISHes is not), and the next read waits for `setImmediate`, as a C broker's
 * event loop serves each socket in turn. Budgets that are too small cost a fast publisher its
 * throughput (a 4 KiB read per turn: -30 % for small QoS 0 messages in npm run bench -- gateway).
 * The counting of packets in flight (`_parsingBatch`) is aedes' own, unchanged.
 */
export function readFairly(client: ReadingClient, packetsPerTurn: number): void {
  const { conn } = client
  conn.removeListener('readable', client._nextBatch)
  let scheduled = false
  let produced = 0
  let bytesPerPacket = 64 // a running estimate, to size the next read
  client._parser.on('packet', () => produced++)

  let parsing = false

  function readBatch(): void {
    scheduled = false
    while (!client._paused && client._parsingBatch <= 0) {
      const want = Math.min(
        MAX_READ_BYTES,
        Math.max(MIN_READ_BYTES, Math.round(bytesPerPacket * packetsPerTurn))
      )
      const n = Math.min(conn.readableLength, want)
      const buf = (n > 0 ? conn.read(n) : conn.read()) as Buffer | null
      if (!buf) return
      const before = produced
      // Handlers that finish at once call `_nextBatch` from inside parse(); the parser is not
      // re-entrant, so this loop decides what comes next.
      parsing = true
      try {
        client._parser.parse(buf)
      } finally {
        parsing = false
      }
      const packets = produced - before
      if (packets > 0) {
        bytesPerPacket = (bytesPerPacket + buf.length / packets) / 2
        // A batch was handled (or is in progress): the next one waits its turn.
        if (client._parsingBatch <= 0) schedule()
        return
      }
      // Only part of a packet: read on now.
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
      if (!parsing) schedule()
    }
  }
  conn.on('readable', client._nextBatch)
}

const MIN_READ_BYTES = 512
const MAX_READ_BYTES = 65_536 // what one socket read gives at most
