import { Argument } from 'commander'
import { apiFlags, integer, type Ctx, type Register } from './program.ts'
import { CommandFailed, cell, keyValues, printJson, printLines, table } from './io.ts'

/** One row of a machine's transition log, as `…/transitions` and the event stream send it. */
export interface Transition {
  machine: string
  machineId: string
  seq: number
  globalSeq?: number
  event: { type: string }
  actor: { kind: string; id?: string; ip?: string }
  from: string | null
  to: string
  at: string
  verified?: boolean
  problem?: string
}

interface Replay {
  machine: string
  machineId: string
  to: number
  state: string
  snapshot: { value: string; context: Record<string, unknown>; status: string }
  matchesStored: boolean | null
  verify: { ok: boolean; rows: number; firstBadSeq?: number; problem?: string; message?: string }
}

const KINDS = ['upstream', 'request']
const base = (kind: string, id: string) =>
  `/api/v1/${kind === 'upstream' ? 'upstreams' : 'requests'}/${encodeURIComponent(id)}`
const RECONNECT_MS = 1_000

const kindArgument = () =>
  new Argument('<kind>', 'whose log: upstream (this side) or request (server side)').choices(KINDS)

export const registerObserve: Register = (root, run) => {
  apiFlags(
    root
      .command('log')
      .description(
        "a machine's transition log, oldest first, each row with its hash-chain check; --follow keeps printing new ones"
      )
  )
    .addArgument(kindArgument())
    .argument('<id>', 'upstream or request id')
    .option(
      '--follow',
      'then print new transitions live until interrupted (with --json: one JSON per line)'
    )
    .option('--page-size <n>', 'rows per API call (default 100)', integer(1, 500))
    .action(run(log))
  apiFlags(
    root
      .command('replay')
      .description(
        "a machine's state rebuilt from its log and whether the hash chain verifies (exit 1 when it does not)"
      )
  )
    .addArgument(kindArgument())
    .argument('<id>', 'upstream or request id')
    .option('--to <seq>', 'replay up to this sequence number', integer(0, Number.MAX_SAFE_INTEGER))
    .action(run(replay))
}

async function log(ctx: Ctx, args: unknown[], opts: Record<string, unknown>): Promise<void> {
  const [kind, id] = args as [string, string]
  const limit = (opts.pageSize as number | undefined) ?? 100
  const rows: Transition[] = []
  let after: number | null = 0
  while (after !== null) {
    const query: string = `?limit=${limit}${after > 0 ? `&after=${after}` : ''}`
    const page = await ctx
      .api()
      .call<{ items: Transition[]; next: number | null }>(
        'GET',
        `${base(kind, id)}/transitions${query}`
      )
    rows.push(...page.items)
    after = page.items.length === 0 ? null : page.next
  }
  if (!opts.follow) {
    if (ctx.json) return printJson(ctx.io, rows)
    return printLines(ctx.io, rows.length === 0 ? 'no transitions' : transitionTable(rows))
  }
  if (ctx.json) for (const r of rows) ctx.io.out(JSON.stringify(r) + '\n')
  else printLines(ctx.io, transitionTable(rows))
  await follow(ctx, kind, id, rows.at(-1))
}

const HEADER = ['SEQ', 'AT', 'EVENT', 'FROM', 'TO', 'ACTOR', 'CHAIN']

function transitionRow(t: Transition): string[] {
  const actor = [t.actor.kind, t.actor.id, t.actor.ip].filter(Boolean).join(' ')
  const chain = t.verified === false ? `BROKEN ${t.problem ?? ''}`.trim() : t.verified ? 'ok' : '-'
  return [String(t.seq), t.at, t.event.type, cell(t.from), t.to, actor, chain]
}

export function transitionTable(rows: Transition[]): string {
  return table(HEADER, rows.map(transitionRow))
}

/**
 * New transitions of one machine from `/api/v1/events`, resumed after the last global seq seen
 * (the log's last row at first), so nothing between the log and the stream is lost; a stream
 * that ends or drops this client is opened again from there. Ends when `ctx.io.signal` aborts.
 */
async function follow(ctx: Ctx, kind: string, id: string, last: Transition | undefined) {
  const signal = ctx.io.signal
  let seq = last?.seq ?? 0
  let globalSeq = last?.globalSeq ?? null
  while (!signal?.aborted) {
    const query = globalSeq === null ? '' : `?after=${globalSeq}`
    try {
      for await (const ev of ctx.api().events(`/api/v1/events${query}`, signal)) {
        if (ev.id !== null && /^\d+$/.test(ev.id)) globalSeq = Number(ev.id)
        if (ev.event !== 'transition') continue
        const t = JSON.parse(ev.data) as Transition
        if (t.machine !== kind || t.machineId !== id || t.seq <= seq) continue
        seq = t.seq
        ctx.io.out(
          ctx.json
            ? JSON.stringify(t) + '\n'
            : table(HEADER, [transitionRow(t)]).split('\n')[1] + '\n'
        )
      }
    } catch (err) {
      if (signal?.aborted) return
      ctx.io.err(`log: event stream: ${(err as Error).message}; reconnecting\n`)
    }
    await sleep(RECONNECT_MS, signal)
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })
}

async function replay(ctx: Ctx, args: unknown[], opts: Record<string, unknown>): Promise<void> {
  const [kind, id] = args as [string, string]
  const to = opts.to === undefined ? '' : `?to=${opts.to as number}`
  const r = await ctx.api().call<Replay>('GET', `${base(kind, id)}/replay${to}`)
  if (ctx.json) printJson(ctx.io, r)
  else printLines(ctx.io, replayText(r))
  if (!r.verify.ok) throw new CommandFailed(`the hash chain does not verify: ${chainText(r)}`)
}

function chainText(r: Replay): string {
  const v = r.verify
  if (v.ok) return `verifies (${v.rows} rows)`
  const at = v.firstBadSeq === undefined ? '' : ` at seq ${v.firstBadSeq}`
  return `BROKEN${at} (${v.problem ?? 'problem'}): ${v.message ?? ''}`.trim()
}

export function replayText(r: Replay): string {
  const context = Object.entries(r.snapshot.context)
    .filter(([, v]) => v !== null && v !== undefined && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `${k}=${cell(v)}`)
    .join(' ')
  return keyValues([
    [r.machine, r.machineId],
    ['replayed to', `seq ${r.to}`],
    ['state', r.state],
    ['context', context],
    ['matches stored', r.matchesStored === null ? 'n/a' : r.matchesStored ? 'yes' : 'NO'],
    ['chain', chainText(r)],
  ])
}
