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
 * A socket that was idle is read as its data comes, in the same turn; only the reads that go on
 * with a burst wait. (Every read waiting a turn, and one more read of each emptied socket, cost a
 * lone packet a loop visit: a single gateway carried 22-27k QoS 1 msg/s that way, 30-34k now.)
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
      // All of it by `read()`, which also ends the stream when the client's FIN came with its
      // last bytes: nothing reads an emptied stream again, so a `read(n)` of exactly what was
      // buffered would leave the socket half open for good.
      const buf = (conn.readableLength > want ? conn.read(want) : conn.read()) as Buffer | null
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
        // A batch was handled (or is in progress): the next one waits its turn. Nothing left
        // buffered: this read emptied the stream, which then emits 'readable' for the next chunk.
        if (client._parsingBatch <= 0 && conn.readableLength > 0) schedule()
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

  /**
   * aedes' count of a packet done (or of a 'readable' event, as its own listener counts it): true
   * when nothing is in flight and the next read may start.
   */
  function batchDone(): boolean {
    if (client._paused) return false
    client._parsingBatch--
    if (client._parsingBatch > 0) return false
    client._parsingBatch = 0
    return !parsing
  }

  client._nextBatch = (err) => {
    if (err) {
      client.emit('error', err)
      return
    }
    if (batchDone()) schedule()
  }
  // A socket that was idle is read in the turn its data came, as aedes reads it: a lone packet
  // waited a further turn of the loop for `setImmediate`. A burst still goes a batch per turn.
  conn.on('readable', () => {
    if (batchDone() && !scheduled) readBatch()
  })
}

const MIN_READ_BYTES = 512
const MAX_READ_BYTES = 65_536 // what one socket read gives at most
