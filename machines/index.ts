import type { AnyStateMachine } from 'xstate'
import { explainRequestRefusal, explainUpstreamRefusal } from './explain.ts'
import {
  incomingRequestMachine,
  REQUEST_EVENT_TYPES,
  REQUEST_MACHINE_VERSION,
} from './incoming-request.ts'
import { UPSTREAM_EVENT_TYPES, UPSTREAM_MACHINE_VERSION, upstreamMachine } from './upstream.ts'

export * from './namespace.ts'
export * from './binding.ts'
export * from './upstream.ts'
export * from './incoming-request.ts'
export * from './apply.ts'
export * from './explain.ts'
export * from './bridge.ts'

export type MachineKind = 'upstream' | 'request'

export interface MachineEntry {
  kind: MachineKind
  machine: AnyStateMachine
  version: number
  eventTypes: readonly string[]
  explain: (state: string, context: Record<string, unknown>, event: { type: string }) => string
}

/** Every persisted machine, by kind, with the version that is stored beside each log row. */
export const MACHINES: Record<MachineKind, MachineEntry> = {
  upstream: {
    kind: 'upstream',
    machine: upstreamMachine,
    version: UPSTREAM_MACHINE_VERSION,
    eventTypes: UPSTREAM_EVENT_TYPES,
    explain: explainUpstreamRefusal,
  },
  request: {
    kind: 'request',
    machine: incomingRequestMachine,
    version: REQUEST_MACHINE_VERSION,
    eventTypes: REQUEST_EVENT_TYPES,
    explain: explainRequestRefusal,
  },
}
