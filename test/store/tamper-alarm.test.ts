import { sql } from 'drizzle-orm'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { startAuditWatch } from '../../services/handshake/index.ts'
import { afterEach, describe, expect, it } from 'vitest'
import { readSse, startNode, waitFor, type Node, type SseEvent } from '../handshake/fixture.ts'

/**
 * Tampering is raised without anyone asking (issue 10): on real Postgres, a transition row
 * edited with SQL is found by the periodic chain check, which sets the gauge, logs at error
 * level naming the row, sends `event: audit` on the SSE stream; `/transitions` flags the row.
 */
describe('audit: the hash chain is checked at start and periodically', () => {
  let n: Node | undefined
  afterEach(async () => {
    await n?.close()
    n = undefined
  })

  const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = []
  const log = pino(
    { level: 'info' },
    { write: (line: string) => void lines.push(JSON.parse(line)) }
  )
  const gauge = async (name: string) => {
    const line = (await n!.metrics.metrics()).split('\n').find((l) => l.startsWith(name + ' '))
    return line ? Number(line.split(' ')[1]) : NaN
  }

  async function makeUpstream(node: Node): Promise<string> {
    const up = await node.call('/api/v1/upstreams', {
      method: 'POST',
      json: { kind: 'mqtt', host: 'mqtt://127.0.0.1' },
    })
    await node.call(`/api/v1/upstreams/${up.id}/bindings`, {
      method: 'PUT',
      json: [{ source: 'plant1', target: 'acme/plant1' }],
    })
    await node.call(`/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })
    return up.id
  }

  it('a clean chain raises nothing; an edited row raises the gauge, an error log, an SSE event and a flag', async () => {
    lines.length = 0
    n = await startNode({ dbKind: 'postgres', log, audit: { intervalMs: 150, recheckRows: 1_000 } })
    const id = await makeUpstream(n)
    await makeUpstream(n)
    const audits: SseEvent[] = []
    const stream = readSse(n.url + '/api/v1/events', {
      token: n.token,
      until: (e) => {
        audits.splice(0, audits.length, ...e.filter((x) => x.event === 'audit'))
        return audits.length > 0
      },
      timeoutMs: 20_000,
    })

    // Clean: every row verified, nothing raised, every row of /transitions verified.
    await waitFor(async () => (await gauge('ub_audit_rows_verified_total')) >= 12)
    expect(await gauge('ub_audit_chain_broken')).toBe(0)
    const clean = await n.call(`/api/v1/upstreams/${id}/transitions`)
    expect(clean.items.map((r: any) => r.verified)).toEqual([true, true, true])
    expect(lines.filter((l) => l.level >= 50)).toEqual([])
    expect(audits).toEqual([])

    // Someone with database access rewrites the binding target of seq 2, leaving the hash.
    await n.db.db.execute(
      sql`update transitions
          set event = jsonb_set(event, '{bindings,0,target}', '"evil/plant1"')
          where machine = 'upstream' and machine_id = ${id} and seq = 2`
    )

    await waitFor(async () => (await gauge('ub_audit_chain_broken')) === 1, { timeoutMs: 10_000 })
    const error = lines.find((l) => l.level === 50 && l.audit === 'chain_broken')
    expect(error).toMatchObject({ machine: 'upstream', machineId: id, seq: 2, problem: 'changed' })
    expect(error!.msg).toContain(`upstream ${id} seq 2`)
    const [event] = await stream
    expect(JSON.parse(event!.data)).toMatchObject({
      status: 'broken',
      first: { machine: 'upstream', machineId: id, seq: 2, problem: 'changed' },
      total: 1,
    })
    const flagged = await n.call(`/api/v1/upstreams/${id}/transitions`)
    expect(flagged.items.map((r: any) => [r.seq, r.verified])).toEqual([
      [1, true],
      [2, false],
      [3, true],
    ])
    expect(flagged.items[1].problem).toContain('does not match its hash')
    // Raised once, not every period.
    await new Promise((r) => setTimeout(r, 400))
    expect(lines.filter((l) => l.audit === 'chain_broken')).toHaveLength(1)

    // Put back as it was: the re-check clears the alarm.
    await n.db.db.execute(
      sql`update transitions
          set event = jsonb_set(event, '{bindings,0,target}', '"acme/plant1"')
          where machine = 'upstream' and machine_id = ${id} and seq = 2`
    )
    await waitFor(async () => (await gauge('ub_audit_chain_broken')) === 0, { timeoutMs: 10_000 })
  }, 60_000)

  it('finds a deleted last row through the heads, and a row broken before start at start', async () => {
    n = await startNode({ dbKind: 'postgres', log, audit: { intervalMs: 150, recheckRows: 2 } })
    const id = await makeUpstream(n)
    await waitFor(async () => (await gauge('ub_audit_rows_verified_total')) >= 3)
    await n.db.db.execute(
      sql`delete from transitions where machine = 'upstream' and machine_id = ${id} and seq = 3`
    )
    await waitFor(async () => (await gauge('ub_audit_chain_broken')) === 1, { timeoutMs: 10_000 })
    expect(n.audit!.broken()).toEqual([
      expect.objectContaining({ machineId: id, seq: 3, problem: 'head_mismatch' }),
    ])

    // A watcher started after the edit, with no re-checks at all: its start-up pass finds it.
    const other = await makeUpstream(n)
    await n.db.db.execute(
      sql`update transitions set actor = '{"kind": "system"}'::jsonb
          where machine = 'upstream' and machine_id = ${other} and seq = 1`
    )
    const fresh = startAuditWatch({
      store: n.store,
      log,
      metrics: new Registry(),
      intervalMs: 60_000,
      recheckRows: 0,
    })
    try {
      await fresh.checkNow()
      expect(fresh.broken()).toEqual([
        expect.objectContaining({ machineId: other, seq: 1, problem: 'changed' }),
      ])
    } finally {
      await fresh.close()
    }
  }, 60_000)
})
