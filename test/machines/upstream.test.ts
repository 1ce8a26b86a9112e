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
import { explainUpstreamRefusal } from '../../machines/explain.ts'
import {
  UPSTREAM_EVENT_TYPES,
  UPSTREAM_STATES,
  upstreamMachine,
  type UpstreamEvent,
  type UpstreamInput,
} from '../../machines/upstream.ts'

const apply = (s: PersistedSnapshot, e: UpstreamEvent) =>
  applyEvent(upstreamMachine, s, e, explainUpstreamRefusal)

/** Fold events that must all be accepted; the fixture of every rule below. */
function after(events: UpstreamEvent[], input: UpstreamInput = {}): PersistedSnapshot {
  return events.reduce(
    (s, e) => {
      const r = apply(s, e)
      if (!r.ok) throw new Error(`fixture event ${e.type} refused: ${r.reason}`)
      return r.snapshot
    },
    initial(upstreamMachine, input)
  )
}

const approve: UpstreamEvent = { type: 'upstream.approve', grants: ['plant/a'] }
const inside = [{ source: 'site/line1', target: 'plant/a/line1' }]
const outside = [{ source: 'site/line1', target: 'plant/b/line1' }]
const bind: UpstreamEvent = { type: 'upstream.bindings.set', bindings: inside }
const activate: UpstreamEvent = { type: 'upstream.activate' }
const ev = (type: Exclude<UpstreamEvent['type'], 'upstream.approve' | 'upstream.bindings.set'>) =>
  ({ type }) as UpstreamEvent

const approved = { kind: 'uns', bindings: [], grants: ['plant/a'] }
const bound = { kind: 'uns', bindings: inside, grants: ['plant/a'] }

describe('upstream machine: rules (pure transition via applyEvent)', () => {
  it('starts Pending with no grants, and a plain MQTT upstream starts Approved with all', () => {
    expect(initial(upstreamMachine, {})).toEqual({
      value: 'Pending',
      context: { kind: 'uns', bindings: [], grants: [] },
      status: 'active',
    })
    expect(initial(upstreamMachine, { kind: 'mqtt' })).toEqual({
      value: 'Approved',
      context: { kind: 'mqtt', bindings: [], grants: ['#'] },
      status: 'active',
    })
  })

  it.each<[string, UpstreamEvent[], UpstreamEvent, string, Record<string, unknown>]>([
    ['approve records the grants', [], approve, 'Approved', approved],
    [
      // An explicit empty list grants nothing; only a missing one means the server's default.
      'approve with an empty grant list grants nothing',
      [],
      { type: 'upstream.approve', grants: [] },
      'Approved',
      { kind: 'uns', bindings: [], grants: [] },
    ],
    [
      'approve without grants grants everything',
      [],
      { type: 'upstream.approve' },
      'Approved',
      { kind: 'uns', bindings: [], grants: ['#'] },
    ],
    ['decline', [], ev('upstream.decline'), 'Declined', { kind: 'uns', bindings: [], grants: [] }],
    [
      'revoke before approval',
      [],
      ev('upstream.revoke'),
      'Revoked',
      { kind: 'uns', bindings: [], grants: [] },
    ],
    ['bindings inside the grants', [approve], bind, 'Approved', bound],
    [
      'empty bindings while Approved',
      [approve, bind],
      { type: 'upstream.bindings.set', bindings: [] },
      'Approved',
      approved,
    ],
    [
      're-approval replaces the grants',
      [approve],
      { type: 'upstream.approve', grants: ['plant/a', 'plant/c'] },
      'Approved',
      { ...approved, grants: ['plant/a', 'plant/c'] },
    ],
    ['activate with a binding', [approve, bind], activate, 'Active', bound],
    [
      'new bindings while Active',
      [approve, bind, activate],
      { type: 'upstream.bindings.set', bindings: [{ source: 'x', target: 'plant/a' }] },
      'Active',
      { ...bound, bindings: [{ source: 'x', target: 'plant/a' }] },
    ],
    ['deactivate', [approve, bind, activate], ev('upstream.deactivate'), 'Approved', bound],
    ['revoke while Approved', [approve], ev('upstream.revoke'), 'Revoked', approved],
    ['revoke while Active', [approve, bind, activate], ev('upstream.revoke'), 'Revoked', bound],
    [
      'request again after decline',
      [ev('upstream.decline')],
      ev('upstream.request'),
      'Pending',
      { kind: 'uns', bindings: [], grants: [] },
    ],
    [
      'request again after revoke forgets the old grants',
      [approve, ev('upstream.revoke')],
      ev('upstream.request'),
      'Pending',
      { ...approved, grants: [] },
    ],
    [
      'delete from Pending',
      [],
      ev('upstream.delete'),
      'Deleted',
      { kind: 'uns', bindings: [], grants: [] },
    ],
    ['delete from Active', [approve, bind, activate], ev('upstream.delete'), 'Deleted', bound],
  ])('%s', (_, setup, event, to, context) => {
    const before = after(setup)
    expect(apply(before, event)).toEqual({
      ok: true,
      from: before.value,
      to,
      snapshot: { value: to, context, status: to === 'Deleted' ? 'done' : 'active' },
    })
  })

  it('copies bindings, so the caller cannot change the recorded ones', () => {
    const bindings = [{ source: 's', target: 'plant/a/x' }]
    const s = after([approve, { type: 'upstream.bindings.set', bindings }])
    bindings[0]!.target = 'elsewhere'
    expect(s.context.bindings).toEqual([{ source: 's', target: 'plant/a/x' }])
  })

  it('a plain MQTT upstream goes straight back to Approved after a new request', () => {
    const s = after([ev('upstream.revoke'), ev('upstream.request')], { kind: 'mqtt' })
    expect(s).toEqual({
      value: 'Approved',
      context: { kind: 'mqtt', bindings: [], grants: ['#'] },
      status: 'active',
    })
  })
})

describe('upstream machine: refusals leave the state unchanged and say why', () => {
  it.each<[string, UpstreamEvent[], UpstreamEvent, string]>([
    ['activate without a binding', [approve], activate, 'activate needs at least one binding'],
    ['activate while Pending', [], activate, 'activate needs Approved, the upstream is Pending'],
    [
      'activate while Active',
      [approve, bind, activate],
      activate,
      'the upstream is already Active',
    ],
    [
      'bindings targets outside the grants',
      [approve],
      { type: 'upstream.bindings.set', bindings: [...inside, ...outside] },
      'targets outside the granted namespaces: plant/b/line1',
    ],
    [
      'bindings outside the grants while Active',
      [approve, bind, activate],
      { type: 'upstream.bindings.set', bindings: outside },
      'targets outside the granted namespaces: plant/b/line1',
    ],
    [
      'a `$` target under a grant of everything',
      [{ type: 'upstream.approve' }],
      { type: 'upstream.bindings.set', bindings: [{ source: 's', target: '$SYS/x' }] },
      'targets outside the granted namespaces: $SYS/x',
    ],
    [
      'empty bindings while Active',
      [approve, bind, activate],
      { type: 'upstream.bindings.set', bindings: [] },
      'an Active upstream needs at least one binding; deactivate first',
    ],
    [
      'bindings while Pending',
      [],
      bind,
      'bindings change only in Approved or Active, the upstream is Pending',
    ],
    [
      'deactivate while Approved',
      [approve],
      ev('upstream.deactivate'),
      'deactivate needs Active, the upstream is Approved',
    ],
    [
      'approve while Active',
      [approve, bind, activate],
      approve,
      'approve applies to a Pending upstream, it is Active',
    ],
    [
      'decline while Approved',
      [approve],
      ev('upstream.decline'),
      'decline applies to a Pending upstream, it is Approved',
    ],
    [
      'revoke while Declined',
      [ev('upstream.decline')],
      ev('upstream.revoke'),
      'revoke does not apply to a Declined upstream',
    ],
    [
      'request while Approved',
      [approve],
      ev('upstream.request'),
      'request again applies to Declined or Revoked, the upstream is Approved',
    ],
  ])('refuses %s', (_, setup, event, reason) => {
    const before = after(setup)
    const result = apply(before, event)
    expect(result).toEqual({ ok: false, reason, snapshot: before })
    expect(result.snapshot).toBe(before)
  })

  it.each(UPSTREAM_EVENT_TYPES)('refuses %s after Deleted', (type) => {
    const deleted = after([approve, bind, activate, ev('upstream.delete')])
    const event = { type, grants: ['x'], bindings: inside } as UpstreamEvent
    expect(apply(deleted, event)).toEqual({
      ok: false,
      reason: 'Deleted is final: no event applies',
      snapshot: deleted,
    })
  })
})

describe('upstream machine: grants checked again at activation', () => {
  // Bindings are checked against the grants when they are set, and again at activate: a
  // re-approval that narrows the grants (or a new request → narrower approval after a revoke)
  // must not let bindings outside the grants through.
  it('refuses activate when a re-approval narrowed the grants below the bindings', () => {
    const narrowed = after([approve, bind, { type: 'upstream.approve', grants: ['plant/c'] }])
    expect(narrowed.context).toEqual({ kind: 'uns', bindings: inside, grants: ['plant/c'] })
    const refused = apply(narrowed, activate)
    expect(refused).toEqual({
      ok: false,
      reason: `activate refused: targets outside the granted namespaces: ${inside.map((b) => b.target).join(', ')}`,
      snapshot: narrowed,
    })
  })

  it('refuses activate with bindings left over from before a revoke and a narrower approval', () => {
    const s = after([
      approve,
      bind,
      ev('upstream.revoke'),
      ev('upstream.request'),
      { type: 'upstream.approve', grants: ['plant/c'] },
    ])
    expect(s.context.grants).toEqual(['plant/c'])
    expect(apply(s, activate).ok).toBe(false)
  })

  it('forgets the old grants when asking again, and an explicit empty grant grants nothing', () => {
    const again = after([approve, ev('upstream.revoke'), ev('upstream.request')])
    expect(again.context.grants).toEqual([])
    const none = after([{ type: 'upstream.approve', grants: [] }])
    expect(none.context.grants).toEqual([])
    expect(apply(none, { type: 'upstream.bindings.set', bindings: inside }).ok).toBe(false)
  })
})

describe('upstream machine: every state is reachable (xstate/graph)', () => {
  const events: UpstreamEvent[] = [
    approve,
    bind,
    { type: 'upstream.bindings.set', bindings: outside },
    activate,
    ev('upstream.deactivate'),
    ev('upstream.decline'),
    ev('upstream.revoke'),
    ev('upstream.request'),
    ev('upstream.delete'),
  ]

  it.each<UpstreamInput>([{ kind: 'uns' }, { kind: 'mqtt' }])(
    'reaches every state, %o, and applyEvent replays each shortest path',
    (input) => {
      const paths = getShortestPaths(upstreamMachine, { input, events })
      const reached = new Set(paths.map((p) => String(p.state.value)))
      // A plain MQTT upstream is never observed Pending (`always` moves it on at once), so it
      // can never be declined either; every state is reached by the 'uns' kind.
      const expected = UPSTREAM_STATES.filter(
        (s) => input.kind === 'uns' || (s !== 'Pending' && s !== 'Declined')
      )
      expect([...reached].sort()).toEqual([...expected].sort())
      for (const path of paths) {
        const replayed = after(
          path.steps
            .map((s) => s.event as UpstreamEvent)
            .filter((e) => (e.type as string) !== 'xstate.init'),
          input
        )
        expect(replayed).toEqual(persist(path.state))
      }
    }
  )
})

describe('upstream machine: persistence', () => {
  it('survives a JSON round trip: restore() then further events behave the same', () => {
    const active = after([approve, bind, activate])
    const stored = JSON.parse(JSON.stringify(active)) as PersistedSnapshot
    expect(stored).toEqual(active)
    expect(restore(upstreamMachine, stored).value).toBe('Active')
    const followUps: UpstreamEvent[] = [
      ev('upstream.deactivate'),
      approve,
      activate,
      ev('upstream.revoke'),
    ]
    const fold = (s: PersistedSnapshot) =>
      followUps.map((e) => {
        const r = apply(s, e)
        s = r.snapshot
        return r
      })
    expect(fold(stored)).toEqual(fold(active))
  })

  it('restores an actor from getPersistedSnapshot() JSON and carries on as the pure path does', () => {
    const actor = createActor(upstreamMachine, { input: {} }).start()
    for (const e of [approve, bind]) actor.send(e)
    const json = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()))
    actor.stop()
    const revived = createActor(upstreamMachine, { snapshot: json, input: {} }).start()
    revived.send(activate)
    expect(persist(revived.getSnapshot())).toEqual(after([approve, bind, activate]))
    revived.stop()
  })
})

describe('upstream machine: connection edits (upstream.connection.set)', () => {
  const connection = { host: 'mqtt://b', brokerPort: 1884, httpPort: 8080, tls: null }
  const edit = (changes: Record<string, { from: unknown; to: unknown }>): UpstreamEvent => ({
    type: 'upstream.connection.set',
    changes,
    connection,
  })
  const port = edit({ brokerPort: { from: 1883, to: 1884 } })
  const scheme = edit({ host: { from: 'mqtt://a', to: 'mqtts://a' } })
  const host = edit({ host: { from: 'mqtt://a', to: 'mqtt://b' } })
  const httpPort = edit({ httpPort: { from: 8080, to: 9090 } })

  it.each([
    ['Pending', [], port],
    ['Pending', [], host],
    ['Approved', [approve], port],
    ['Approved', [approve], scheme],
    ['Active', [approve, bind, activate], port],
    ['Declined', [ev('upstream.decline')], host],
    ['Revoked', [approve, ev('upstream.revoke')], httpPort],
  ] as const)('keeps %s for %#: the same server, or not approved by any', (state, setup, e) => {
    const before = after([...setup])
    const r = apply(before, e)
    expect(r.ok && [r.from, r.to]).toEqual([state, state])
    expect(r.snapshot.context).toEqual({ ...before.context, connection })
  })

  it.each([
    ['Approved', [approve], host],
    ['Active', [approve, bind, activate], httpPort],
  ] as const)('%s → Pending with no grants for another server', (state, setup, e) => {
    const r = apply(after([...setup]), e)
    expect(r.ok && [r.from, r.to]).toEqual([state, 'Pending'])
    expect(r.snapshot.context).toMatchObject({ grants: [], connection })
  })

  it('keeps a plain broker Approved whatever moves', () => {
    const r = apply(after([], { kind: 'mqtt' }), host)
    expect(r.ok && r.to).toBe('Approved')
    expect(r.snapshot.context).toMatchObject({ grants: ['#'] })
  })
})
