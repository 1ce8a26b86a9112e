import { assign, setup } from 'xstate'
import { GRANT_ALL } from './namespace.ts'

/** The Incoming-request lifecycle (upstream-server side), ARCHITECTURE.md §6. Pure. */
/**
 * 2 adds `request.expire` (Pending → Expired, sent by the system when a request waited past
 * `handshakePendingTtlMs`). A superset of 1: every version-1 log replays the same under it.
 */
export const REQUEST_MACHINE_VERSION = 2

export type RequestState = 'Pending' | 'Accepted' | 'Declined' | 'Revoked' | 'Withdrawn' | 'Expired'
export const REQUEST_STATES: readonly RequestState[] = [
  'Pending',
  'Accepted',
  'Declined',
  'Revoked',
  'Withdrawn',
  'Expired',
]

export interface RequestContext {
  instanceId: string
  grants: string[]
}

export interface RequestInput {
  instanceId: string
}

export type RequestEvent =
  | { type: 'request.accept'; grants?: string[] }
  | { type: 'request.decline' }
  | { type: 'request.revoke' }
  | { type: 'request.withdraw' }
  | { type: 'request.expire' }

export const REQUEST_EVENT_TYPES = [
  'request.accept',
  'request.decline',
  'request.revoke',
  'request.withdraw',
  'request.expire',
] as const

export const incomingRequestMachine = setup({
  types: {
    context: {} as RequestContext,
    events: {} as RequestEvent,
    input: {} as RequestInput,
  },
  actions: {
    recordGrants: assign({
      // No grants in the event: the operator did not narrow, so everything but `$` topics.
      grants: ({ event }) =>
        event.type === 'request.accept' && event.grants ? [...event.grants] : [GRANT_ALL],
    }),
  },
}).createMachine({
  id: 'request',
  initial: 'Pending',
  context: ({ input }) => ({ instanceId: input.instanceId, grants: [] }),
  states: {
    Pending: {
      on: {
        'request.accept': { target: 'Accepted', actions: 'recordGrants' },
        'request.decline': 'Declined',
        'request.withdraw': 'Withdrawn',
        'request.expire': 'Expired',
      },
    },
    Accepted: {
      on: {
        'request.revoke': 'Revoked',
        'request.withdraw': 'Withdrawn',
      },
    },
    Declined: { type: 'final' },
    Revoked: { type: 'final' },
    Withdrawn: { type: 'final' },
    Expired: { type: 'final' },
  },
})

export type IncomingRequestMachine = typeof incomingRequestMachine
