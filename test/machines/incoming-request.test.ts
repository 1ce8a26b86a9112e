import { createActor } from 'xstate'
import { getShortestPaths } from 'xstate/graph'
import { describe, expect, it } from 'vitest'
import {
  applyEvent,
  initial,
  persist,
  restore,
  type PersistedSnapshot,
} from '../../machines/apply.ts'
import { explainRequestRefusal } from '../../machines/explain.ts'
import {
  incomingRequestMachine,
  REQUEST_EVENT_TYPES,
  REQUEST_STATES,
  type RequestEvent,
} from '../../machines/incoming-request.ts'

const input = { instanceId: 'inst-1' }
const apply = (s: PersistedSnapshot, e: RequestEvent) =>
  applyEvent(incomingRequestMachine, s, e, explainRequestRefusal)

function after(events: RequestEvent[]): PersistedSnapshot {
  return events.reduce(
    (s, e) => {
      const r = apply(s, e)
      if (!r.ok) throw new Error(`fixture event ${e.type} refused: ${r.reason}`)
      return r.snapshot
    },
    initial(incomingRequestMachine, input)
  )
}

const accept: RequestEvent = { type: 'request.accept', grants: ['plant/a'] }
const decline: RequestEvent = { type: 'request.decline' }
const revoke: RequestEvent = { type: 'request.revoke' }
const withdraw: RequestEvent = { type: 'request.withdraw' }
const expire: RequestEvent = { type: 'request.expire' }
const FINAL = ['Declined', 'Revoked', 'Withdrawn', 'Expired']

describe('incoming-request machine: rules (pure transition via applyEvent)', () => {
  it('starts Pending with the requesting instance and no grants', () => {
    expect(initial(incomingRequestMachine, input)).toEqual({
      value: 'Pending',
      context: { instanceId: 'inst-1', grants: [] },
      status: 'active',
    })
  })

  it.each<[string, RequestEvent[], RequestEvent, string, string[]]>([
    ['accept records the grants', [], accept, 'Accepted', ['plant/a']],
    ['accept without grants grants everything', [], { type: 'request.accept' }, 'Accepted', ['#']],
    [
      'accept with empty grants grants nothing',
      [],
      { type: 'request.accept', grants: [] },
      'Accepted',
      [],
    ],
    ['decline', [], decline, 'Declined', []],
    ['withdraw while Pending', [], withdraw, 'Withdrawn', []],
    ['expire while Pending', [], expire, 'Expired', []],
    ['revoke after accept', [accept], revoke, 'Revoked', ['plant/a']],
    ['withdraw after accept', [accept], withdraw, 'Withdrawn', ['plant/a']],
  ])('%s', (_, setup, event, to, grants) => {
    const before = after(setup)
    expect(apply(before, event)).toEqual({
      ok: true,
      from: before.value,
      to,
      snapshot: {
        value: to,
        context: { instanceId: 'inst-1', grants },
        status: FINAL.includes(to) ? 'done' : 'active',
      },
    })
  })
})

describe('incoming-request machine: refusals leave the state unchanged and say why', () => {
  it.each<[string, RequestEvent[], RequestEvent, string]>([
    ['revoke while Pending', [], revoke, 'revoke applies to an Accepted request, it is Pending'],
    ['accept twice', [accept], accept, 'accept applies to a Pending request, it is Accepted'],
    [
      'decline after accept',
      [accept],
      decline,
      'decline applies to a Pending request, it is Accepted',
    ],
  ])('refuses %s', (_, setup, event, reason) => {
    const before = after(setup)
    const result = apply(before, event)
    expect(result).toEqual({ ok: false, reason, snapshot: before })
    expect(result.snapshot).toBe(before)
  })

  const finals: Array<[string, RequestEvent[]]> = [
    ['Declined', [decline]],
    ['Revoked', [accept, revoke]],
    ['Withdrawn', [withdraw]],
    ['Expired', [expire]],
  ]
  it.each(
    finals.flatMap(([state, path]) =>
      REQUEST_EVENT_TYPES.map((type) => [state, path, type] as const)
    )
  )('refuses anything after %s: %s', (state, path, type) => {
    const done = after([...path])
    expect(apply(done, { type } as RequestEvent)).toEqual({
      ok: false,
      reason: `${state} is final: no event applies`,
      snapshot: done,
    })
  })
})

describe('incoming-request machine: every state is reachable (xstate/graph)', () => {
  it('reaches every state, and applyEvent replays each shortest path', () => {
    const paths = getShortestPaths(incomingRequestMachine, {
      input,
      events: [accept, decline, revoke, withdraw, expire],
    })
    expect([...new Set(paths.map((p) => String(p.state.value)))].sort()).toEqual(
      [...REQUEST_STATES].sort()
    )
    for (const path of paths) {
      const events = path.steps
        .map((s) => s.event as RequestEvent)
        .filter((e) => e.type !== ('xstate.init' as string))
      expect(after(events)).toEqual(persist(path.state))
    }
  })
})

describe('incoming-request machine: persistence', () => {
  it('survives a JSON round trip: restore() then further events behave the same', () => {
    const accepted = after([accept])
    const stored = JSON.parse(JSON.stringify(accepted)) as PersistedSnapshot
    expect(stored).toEqual(accepted)
    expect(restore(incomingRequestMachine, stored).value).toBe('Accepted')
    for (const e of [accept, decline, revoke, withdraw]) {
      expect(apply(stored, e)).toEqual(apply(accepted, e))
    }
  })

  it('restores a final snapshot as done', () => {
    const stored = JSON.parse(JSON.stringify(after([accept, revoke]))) as PersistedSnapshot
    expect(restore(incomingRequestMachine, stored).status).toBe('done')
  })

  it('restores an actor from getPersistedSnapshot() JSON and carries on as the pure path does', () => {
    const actor = createActor(incomingRequestMachine, { input }).start()
    actor.send(accept)
    const json = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()))
    actor.stop()
    const revived = createActor(incomingRequestMachine, { snapshot: json, input }).start()
    revived.send(withdraw)
    expect(persist(revived.getSnapshot())).toEqual(after([accept, withdraw]))
    revived.stop()
  })
})
