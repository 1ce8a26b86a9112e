import {
  transition,
  initialTransition,
  type AnyStateMachine,
  type AnyMachineSnapshot,
} from 'xstate'

/** The persisted form of a machine snapshot: JSON only, what the store keeps in Postgres. */
export interface PersistedSnapshot {
  value: string
  context: Record<string, unknown>
  status: 'active' | 'done'
}

export type ApplyResult =
  | { ok: true; snapshot: PersistedSnapshot; from: string; to: string }
  | { ok: false; reason: string; snapshot: PersistedSnapshot }

export function persist(snapshot: AnyMachineSnapshot): PersistedSnapshot {
  // Round trip through JSON so what we return is exactly what a database gives back later.
  return JSON.parse(
    JSON.stringify({ value: snapshot.value, context: snapshot.context, status: snapshot.status })
  ) as PersistedSnapshot
}

/** A real MachineSnapshot from stored JSON; `transition()` cannot take plain JSON. */
export function restore(machine: AnyStateMachine, stored: PersistedSnapshot): AnyMachineSnapshot {
  return machine.resolveState({ value: stored.value, context: stored.context })
}

export function initial(machine: AnyStateMachine, input: unknown): PersistedSnapshot {
  const [snapshot] = initialTransition(machine, input)
  return persist(snapshot)
}

/**
 * Apply one event purely. A refused event leaves the snapshot as it was and says why:
 * XState returns the same snapshot object when no transition is enabled.
 */
export function applyEvent(
  machine: AnyStateMachine,
  stored: PersistedSnapshot,
  event: { type: string },
  explain: (state: string, context: Record<string, unknown>, event: { type: string }) => string
): ApplyResult {
  if (stored.status === 'done') {
    return { ok: false, reason: `${stored.value} is final: no event applies`, snapshot: stored }
  }
  const current = restore(machine, stored)
  const [next] = transition(machine, current, event as never)
  if (next === current) {
    return { ok: false, reason: explain(stored.value, stored.context, event), snapshot: stored }
  }
  return { ok: true, snapshot: persist(next), from: stored.value, to: String(next.value) }
}
