import type { Duplex } from 'node:stream'

/**
 * Everything written to one connection in one turn of the event loop leaves in one writev.
 *
 * mqtt-packet corks a packet only until the next tick, so each delivery was a syscall of its own:
 * a third of a loaded gateway's CPU went to `writev`. A connection now stays corked from its first
 * write in a turn until `setImmediate`, which runs before the loop waits for I/O again, so a lone
 * packet leaves within the same turn and a loaded gateway sends a burst per socket per turn, as
 * Mosquitto's loop does. Backpressure is unchanged: `write` still reports the buffered length.
 */
export function coalesceWrites(conn: Duplex): void {
  let corked = false
  const uncork = () => {
    corked = false
    conn.uncork()
  }
  const write = conn.write
  conn.write = function (this: Duplex, ...args: Parameters<Duplex['write']>): boolean {
    if (!corked && !conn.writableEnded) {
      corked = true
      conn.cork()
      setImmediate(uncork)
    }
    return write.apply(this, args)
  } as Duplex['write']
}
