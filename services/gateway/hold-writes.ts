import type { Aedes } from 'aedes'
import type { AedesInternals } from './aedes-internals.ts'
import type { ConnackGate, GatedClient } from './connack-gate.ts'
import type { BusPersistence } from './persistence.ts'

/**
 * Queue writes may wait for a PUBACK (persistence/held-writes.ts) only for a session connected to
 * this gateway and past its resume: one catching up gets live messages from its queue, so theirs
 * must be there, and one connected elsewhere is acknowledged on another gateway.
 */
export function holdWritesForLiveSessions(
  aedes: Aedes,
  persistence: BusPersistence,
  connackGate: ConnackGate
): void {
  const clients = (aedes as unknown as AedesInternals).clients
  persistence.holdWritesFor((clientId) => {
    const client = clients[clientId]
    return (
      client !== undefined &&
      client.connected &&
      !client.conn.destroyed &&
      !connackGate.holding(client as unknown as GatedClient)
    )
  })
}
