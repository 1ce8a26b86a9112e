/**
 * Revoked means refused and disconnected within a second, whatever the timing. Three layers:
 * the store's transition event (every gateway hears it) disconnects the bridge and moves the
 * authenticator's epoch, so no answer asked for before it is used; a bridge that registers with
 * aedes after a grant change is checked again before it may stay (its answer may have crossed
 * the event on the wire); and every connected bridge is re-checked against the store
 * periodically, for an event this gateway missed.
 */
import type { Client } from 'aedes'
import { decodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import { transitionSubject, type TransitionRecord } from '../contracts/store.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { AedesInternals } from './aedes-internals.ts'
import type { Principal } from './auth.ts'
import type { Authenticator } from './authenticator.ts'
import type { Broker } from './broker.ts'
import type { GatewayCounters } from './metrics.ts'

export const DEFAULT_BRIDGE_REVALIDATE_MS = 30_000
const CLOSING_STATES = new Set(['Revoked', 'Withdrawn'])
type Bridge = Extract<Principal, { kind: 'bridge' }>

export interface RevocationOptions {
  bus: Bus
  store: StoreClient
  broker: Broker
  authenticator: Authenticator
  counters: GatewayCounters
  log: Logger
  /** ms between re-checks of every connected bridge; 0 = none. */
  revalidateMs?: number
}

export async function enforceRevocations({
  bus,
  store,
  broker,
  authenticator,
  counters,
  log,
  revalidateMs = DEFAULT_BRIDGE_REVALIDATE_MS,
}: RevocationOptions): Promise<Subscription> {
  const disconnect = (pick: (p: Bridge) => boolean): number => {
    const n = broker.disconnect((p) => p.kind === 'bridge' && pick(p))
    counters.revokedDisconnects += n
    return n
  }
  /** Close the bridges among `clients` whose request the store no longer has Accepted. */
  const recheck = async (bridges: Bridge[]): Promise<void> => {
    const ids = new Set(bridges.map((b) => b.requestId).filter((id) => id !== undefined))
    for (const id of ids) {
      let accepted: boolean
      try {
        accepted = (await store.call('request.get', { id })).status === 'Accepted'
      } catch (err) {
        if ((err as { code?: string }).code !== 'not_found') {
          log.warn({ err, requestId: id }, 'could not re-check a bridge; kept for now')
          continue
        }
        accepted = false
      }
      if (accepted) continue
      authenticator.grantsChanged() // the event was missed: no cached answer may admit it again
      if (disconnect((p) => p.requestId === id) > 0) {
        log.info({ requestId: id }, 'bridge access ended (re-check)')
      }
    }
  }

  // Every gateway hears every request transition (no queue group).
  const sub = await bus.subscribe(transitionSubject('request', '*'), (msg) => {
    const t = decodeJson<TransitionRecord>(msg.data)
    if (t.to !== 'Accepted' && !CLOSING_STATES.has(t.to)) return
    authenticator.grantsChanged()
    if (!CLOSING_STATES.has(t.to)) return
    const instanceId = (t.snapshot as { context?: { instanceId?: string } })?.context?.instanceId
    const n = disconnect((p) => p.requestId === t.machineId || p.username === instanceId)
    log.info(
      { requestId: t.machineId, instanceId, to: t.to, disconnected: n },
      'bridge access ended'
    )
  })

  // aedes registers a client a few steps after authenticate (session, will): one admitted on
  // an answer from before a grant change is checked again once it is there to be closed.
  const onClient = (client: Client) => {
    const p = broker.principal(client)
    if (p?.kind === 'bridge' && authenticator.isStale(p)) void recheck([p])
  }
  broker.aedes.on('client', onClient)

  const connected = (): Bridge[] =>
    Object.values((broker.aedes as unknown as AedesInternals).clients)
      .map((c) => broker.principal(c))
      .filter((p): p is Bridge => p?.kind === 'bridge')
  let running: Promise<void> | undefined
  const timer =
    revalidateMs > 0
      ? setInterval(() => {
          running ??= recheck(connected()).finally(() => (running = undefined))
        }, revalidateMs)
      : undefined
  timer?.unref()

  return {
    async unsubscribe() {
      clearInterval(timer)
      broker.aedes.off('client', onClient)
      await sub.unsubscribe()
      await running
    },
  }
}
