import { createActor, initialTransition, transition } from 'xstate'
import { describe, expect, it } from 'vitest'
import { backoffDelay, bridgeMachine } from '../../machines/index.ts'

describe('bridge machine', () => {
  it('connects, forwards, backs off on failure and reconnects', () => {
    const [s0] = initialTransition(bridgeMachine)
    expect(s0.value).toBe('Connecting')
    const [s1] = transition(bridgeMachine, s0, { type: 'bridge.connected' })
    expect(s1.value).toBe('Forwarding')
    const [s2] = transition(bridgeMachine, s1, { type: 'bridge.failed', error: 'link cut' })
    expect({ value: s2.value, context: s2.context }).toEqual({
      value: 'Backoff',
      context: { attempt: 1, lastError: 'link cut' },
    })
  })

  it('clears the error once connected again: a link back in Forwarding shows no old error', () => {
    const [s0] = initialTransition(bridgeMachine)
    const [s1] = transition(bridgeMachine, s0, { type: 'bridge.failed', error: 'link cut' })
    const backoff = bridgeMachine.resolveState({ value: 'Connecting', context: s1.context })
    const [s2] = transition(bridgeMachine, backoff, { type: 'bridge.connected' })
    expect({ value: s2.value, lastError: s2.context.lastError }).toEqual({
      value: 'Forwarding',
      lastError: null,
    })
  })

  it('stops for good on a rejected credential', () => {
    const [s0] = initialTransition(bridgeMachine)
    const [s1] = transition(bridgeMachine, s0, {
      type: 'bridge.failed',
      error: 'Connection refused: Not authorized',
      fatal: true,
    })
    expect(s1.value).toBe('Stopped')
    expect(s1.context.lastError).toBe('Connection refused: Not authorized')
  })

  it('goes back to Connecting after the provided backoff delay', async () => {
    const opened: number[] = []
    const actor = createActor(
      bridgeMachine.provide({
        actions: { openLink: () => void opened.push(Date.now()) },
        delays: { backoff: 20 },
      })
    ).start()
    actor.send({ type: 'bridge.failed', error: 'x' })
    expect(actor.getSnapshot().value).toBe('Backoff')
    await new Promise((r) => setTimeout(r, 60))
    expect(actor.getSnapshot().value).toBe('Connecting')
    expect(opened).toHaveLength(2)
    actor.stop()
  })

  it('backs off exponentially with jitter up to the cap', () => {
    const lo = (attempt: number) =>
      backoffDelay({ attempt, baseMs: 100, maxMs: 5_000, random: () => 0 })
    const hi = (attempt: number) =>
      backoffDelay({ attempt, baseMs: 100, maxMs: 5_000, random: () => 1 })
    expect([0, 1, 2, 3, 10].map(lo)).toEqual([50, 100, 200, 400, 2_500])
    expect([0, 1, 2, 3, 10].map(hi)).toEqual([100, 200, 400, 800, 5_000])
  })
})
