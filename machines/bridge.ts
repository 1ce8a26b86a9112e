import { assign, setup } from 'xstate'

/**
 * The Bridge link lifecycle (ARCHITECTURE.md §6): Connecting → Forwarding → Backoff → Connecting
 * …, Stopped. Live, never persisted, so it may use `after`: the backoff delay is a named delay
 * that the supervisor provides (`machine.provide({ delays, actions })`), and so are the I/O
 * actions.
 */
export type BridgeState = 'Connecting' | 'Forwarding' | 'Backoff' | 'Stopped'

export interface BridgeContext {
  /** Failed attempts since the link last stayed up for `stable`; drives the backoff. */
  attempt: number
  lastError: string | null
}

export type BridgeEvent =
  | { type: 'bridge.connected' }
  /** `fatal`: retrying cannot help (CONNACK 4/5: the credential was rejected or revoked). */
  | { type: 'bridge.failed'; error: string; fatal?: boolean }
  | { type: 'bridge.stop'; reason?: string }
  | { type: 'bridge.start' }

export const DEFAULT_BACKOFF_BASE_MS = 250 // first retry after ~0.25 s
// 8 s cap: a link whose upstream is back resumes within 10 s of it (the data-centre target),
// and 100 links retrying a dead upstream cost it one connect each per 4–8 s.
export const DEFAULT_BACKOFF_MAX_MS = 8_000
const STABLE_MS = 10_000 // a link that stayed up 10 s resets the backoff

/**
 * Exponential backoff with "full jitter" (AWS architecture blog, "Exponential Backoff And
 * Jitter"): uniform in [cap/2, cap] where cap = min(max, base·2^attempt). The lower half is kept
 * so a retry storm never collapses to zero delay.
 */
export function backoffDelay({
  attempt,
  baseMs = DEFAULT_BACKOFF_BASE_MS,
  maxMs = DEFAULT_BACKOFF_MAX_MS,
  random = Math.random,
}: {
  attempt: number
  baseMs?: number
  maxMs?: number
  random?: () => number
}): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30))
  return Math.round(cap / 2 + (random() * cap) / 2)
}

export const bridgeMachine = setup({
  types: {
    context: {} as BridgeContext,
    events: {} as BridgeEvent,
  },
  actions: {
    // I/O at the edge: the supervisor provides these (machine.provide).
    openLink: () => {},
    closeLink: () => {},
    recordError: assign({
      lastError: ({ event }) =>
        event.type === 'bridge.failed'
          ? event.error
          : event.type === 'bridge.stop'
            ? (event.reason ?? null)
            : null,
    }),
    // Connected again: the error that took the link down no longer holds.
    clearError: assign({ lastError: null }),
    countAttempt: assign({ attempt: ({ context }) => context.attempt + 1 }),
    resetAttempts: assign({ attempt: 0 }),
  },
  guards: {
    isFatal: ({ event }) => event.type === 'bridge.failed' && event.fatal === true,
  },
  delays: {
    backoff: ({ context }) => backoffDelay({ attempt: context.attempt }),
    stable: STABLE_MS,
  },
}).createMachine({
  id: 'bridge',
  initial: 'Connecting',
  context: { attempt: 0, lastError: null },
  on: {
    'bridge.stop': { target: '.Stopped', actions: 'recordError' },
  },
  states: {
    Connecting: {
      entry: 'openLink',
      on: {
        'bridge.connected': { target: 'Forwarding', actions: 'clearError' },
        'bridge.failed': [
          { guard: 'isFatal', target: 'Stopped', actions: 'recordError' },
          { target: 'Backoff', actions: 'recordError' },
        ],
      },
    },
    Forwarding: {
      after: { stable: { actions: 'resetAttempts' } },
      on: {
        'bridge.failed': [
          { guard: 'isFatal', target: 'Stopped', actions: 'recordError' },
          { target: 'Backoff', actions: 'recordError' },
        ],
      },
    },
    Backoff: {
      entry: ['closeLink', 'countAttempt'],
      after: { backoff: 'Connecting' },
    },
    Stopped: {
      entry: 'closeLink',
      on: { 'bridge.start': { target: 'Connecting', actions: 'resetAttempts' } },
    },
  },
})

export type BridgeMachine = typeof bridgeMachine
