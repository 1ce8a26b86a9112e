/**
 * A downstream learns that it was accepted, declined or revoked within about a second, without
 * the upstream reaching it (an edge behind NAT): its status request may wait (`?wait=<s>`,
 * `&seen=<status>`) until the request leaves the status it last saw, woken by the request's
 * transition on the bus. One bus subscription serves every waiter; at most MAX_WAITERS wait at
 * once (more are answered at once, counted), so waiting costs a map entry and a timer each.
 */
import { decodeJson, type Bus, type Subscription } from '../../common/bus/bus.ts'
import { transitionSubject, type TransitionRecord } from '../../contracts/store.ts'

export const MAX_WAITERS = 10_000
/** The longest a status request may wait, in seconds (under common proxy idle timeouts). */
export const MAX_WAIT_S = 30

export interface StatusWaiters {
  /** Resolves when request `id` moves, after `ms`, or at once when too many wait (false). */
  wait(id: string, ms: number): Promise<boolean>
  readonly size: number
  close(): Promise<void>
}

export function createStatusWaiters(bus: Bus, onRefused: () => void): StatusWaiters {
  const waiting = new Map<string, Set<() => void>>()
  let size = 0
  let sub: Promise<Subscription> | undefined
  const listen = () =>
    (sub ??= bus.subscribe(transitionSubject('request', '*'), (msg) => {
      const { machineId } = decodeJson<TransitionRecord>(msg.data)
      for (const wake of waiting.get(machineId) ?? []) wake()
    }))
  return {
    async wait(id, ms) {
      if (size >= MAX_WAITERS) {
        onRefused()
        return false
      }
      await listen()
      return new Promise<boolean>((resolve) => {
        let set = waiting.get(id)
        if (!set) waiting.set(id, (set = new Set()))
        size++
        const done = (moved: boolean) => {
          clearTimeout(timer)
          if (!set!.delete(wake)) return
          size--
          if (set!.size === 0) waiting.delete(id)
          resolve(moved)
        }
        const wake = () => done(true)
        const timer = setTimeout(() => done(false), ms)
        timer.unref()
        set.add(wake)
      })
    },
    get size() {
      return size
    },
    async close() {
      for (const set of waiting.values()) for (const wake of [...set]) wake()
      await (await sub)?.unsubscribe()
    },
  }
}
