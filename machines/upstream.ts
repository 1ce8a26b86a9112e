import { assign, setup } from 'xstate'
import { GRANT_ALL } from './namespace.ts'
import { bindingWithinGrants, type Binding } from './binding.ts'

export type { Binding }

/**
 * The Upstream lifecycle (downstream side), ARCHITECTURE.md §6. Pure: no timers, no invoked
 * children, no I/O. The binding store applies events to the persisted snapshot with `transition()`.
 */
export const UPSTREAM_MACHINE_VERSION = 1

export type UpstreamState = 'Pending' | 'Approved' | 'Active' | 'Declined' | 'Revoked' | 'Deleted'
export const UPSTREAM_STATES: readonly UpstreamState[] = [
  'Pending',
  'Approved',
  'Active',
  'Declined',
  'Revoked',
  'Deleted',
]

export type UpstreamKind = 'uns' | 'mqtt'

export interface UpstreamContext {
  kind: UpstreamKind
  bindings: Binding[]
  /** Namespaces the upstream server granted; targets must lie inside them. */
  grants: string[]
  /** The connection as the last edit left it (absent until one); PEM fields as digests. */
  connection?: UpstreamConnection
}

/** Where an upstream connects, as its edit event records it: PEM material only as digests. */
export interface UpstreamConnection {
  host: string
  brokerPort: number
  httpPort: number
  tls: Record<string, string | boolean> | null
}

/** One changed connection field (`host`, `brokerPort`, `httpPort`, `tls.<field>`): old → new. */
export type ConnectionChanges = Record<string, { from: unknown; to: unknown }>

export interface UpstreamInput {
  kind?: UpstreamKind
}

export type UpstreamEvent =
  | { type: 'upstream.approve'; grants?: string[] }
  | { type: 'upstream.decline' }
  | { type: 'upstream.revoke' }
  | { type: 'upstream.request' }
  | { type: 'upstream.bindings.set'; bindings: Binding[] }
  | { type: 'upstream.activate' }
  | { type: 'upstream.deactivate' }
  | { type: 'upstream.delete' }
  | { type: 'upstream.connection.set'; changes: ConnectionChanges; connection: UpstreamConnection }

export const UPSTREAM_EVENT_TYPES = [
  'upstream.approve',
  'upstream.decline',
  'upstream.revoke',
  'upstream.request',
  'upstream.bindings.set',
  'upstream.activate',
  'upstream.deactivate',
  'upstream.delete',
  'upstream.connection.set',
] as const

const hostnameOf = (host: unknown): string => {
  try {
    return new URL(String(host)).hostname
  } catch {
    return String(host)
  }
}

/**
 * Whether an edit points the upstream at another server: a new host name or HTTP port. The
 * scheme (transport, http vs https) and the broker port are the same server's.
 */
export function serverChanged(changes: ConnectionChanges | undefined): boolean {
  if (!changes) return false
  if (changes.httpPort) return true
  return changes.host !== undefined && hostnameOf(changes.host.from) !== hostnameOf(changes.host.to)
}

function bindingsFitGrants(bindings: readonly Binding[], grants: readonly string[]): boolean {
  return bindings.every((b) => bindingWithinGrants(b, grants))
}

/**
 * An edit in Approved or Active: another server → Pending with no grants (it must approve us);
 * otherwise the state stays and an Active link reconnects with the new options.
 */
const CONNECTION_SET = [
  {
    guard: 'isNewServer' as const,
    target: '#upstream.Pending',
    actions: ['recordConnection' as const, 'forgetGrants' as const],
  },
  { actions: 'recordConnection' as const },
]

export const upstreamMachine = setup({
  types: {
    context: {} as UpstreamContext,
    events: {} as UpstreamEvent,
    input: {} as UpstreamInput,
  },
  guards: {
    isPlainMqtt: ({ context }) => context.kind === 'mqtt',
    // Grants can narrow after bindings were set (a re-approval): check them again at activation.
    hasBindingWithinGrants: ({ context }) =>
      context.bindings.length > 0 && bindingsFitGrants(context.bindings, context.grants),
    // Another server has not approved us: a handshake upstream asks it afresh (README, Edit).
    isNewServer: ({ context, event }) =>
      context.kind === 'uns' &&
      event.type === 'upstream.connection.set' &&
      serverChanged(event.changes),
    bindingsAllowed: ({ context, event }) =>
      event.type === 'upstream.bindings.set' && bindingsFitGrants(event.bindings, context.grants),
    bindingsAllowedAndNotEmpty: ({ context, event }) =>
      event.type === 'upstream.bindings.set' &&
      event.bindings.length > 0 &&
      bindingsFitGrants(event.bindings, context.grants),
  },
  actions: {
    recordGrants: assign({
      // No grants in the event means the server did not narrow: everything but `$` topics.
      // An explicit empty list grants nothing.
      grants: ({ event }) =>
        event.type === 'upstream.approve' && event.grants ? [...event.grants] : [GRANT_ALL],
    }),
    forgetGrants: assign({ grants: () => [] as string[] }),
    // A plain broker has no grants to give; what it accepts is up to its own ACL.
    grantEverything: assign({ grants: () => [GRANT_ALL] }),
    recordConnection: assign({
      connection: ({ context, event }) =>
        event.type === 'upstream.connection.set' ? { ...event.connection } : context.connection,
    }),
    recordBindings: assign({
      bindings: ({ event }) =>
        event.type === 'upstream.bindings.set' ? event.bindings.map((b) => ({ ...b })) : [],
    }),
  },
}).createMachine({
  id: 'upstream',
  initial: 'Pending',
  context: ({ input }) => ({
    kind: input?.kind ?? 'uns',
    bindings: [],
    grants: input?.kind === 'mqtt' ? [GRANT_ALL] : [],
  }),
  on: {
    'upstream.delete': '.Deleted',
  },
  states: {
    Pending: {
      // A plain MQTT broker speaks no handshake: it is approved from the start (issue 4, item 6).
      always: { guard: 'isPlainMqtt', target: 'Approved', actions: 'grantEverything' },
      on: {
        'upstream.approve': { target: 'Approved', actions: 'recordGrants' },
        'upstream.decline': 'Declined',
        // The server may revoke before we ever saw the acceptance.
        'upstream.revoke': 'Revoked',
        'upstream.connection.set': { actions: 'recordConnection' },
      },
    },
    Approved: {
      on: {
        'upstream.bindings.set': { guard: 'bindingsAllowed', actions: 'recordBindings' },
        'upstream.activate': { guard: 'hasBindingWithinGrants', target: 'Active' },
        'upstream.revoke': 'Revoked',
        // A re-approval (grants narrowed or widened by the server) is recorded, not refused.
        'upstream.approve': { actions: 'recordGrants' },
        'upstream.connection.set': CONNECTION_SET,
      },
    },
    Active: {
      on: {
        'upstream.bindings.set': { guard: 'bindingsAllowedAndNotEmpty', actions: 'recordBindings' },
        'upstream.deactivate': 'Approved',
        'upstream.revoke': 'Revoked',
        'upstream.connection.set': CONNECTION_SET,
      },
    },
    // Asking again starts from no grants: whatever the server grants next is what holds.
    // An edit keeps these: asking again then reaches the server as edited.
    Declined: {
      on: {
        'upstream.request': { target: 'Pending', actions: 'forgetGrants' },
        'upstream.connection.set': { actions: 'recordConnection' },
      },
    },
    Revoked: {
      on: {
        'upstream.request': { target: 'Pending', actions: 'forgetGrants' },
        'upstream.connection.set': { actions: 'recordConnection' },
      },
    },
    Deleted: { type: 'final' },
  },
})

export type UpstreamMachine = typeof upstreamMachine
