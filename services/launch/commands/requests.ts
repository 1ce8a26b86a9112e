import { apiFlags, type Ctx, type Register } from './program.ts'
import { keyValues, printJson, printLines, table } from './io.ts'

/** An incoming request as the API answers it (the upstream-server side). */
export interface RequestView {
  id: string
  instanceId: string
  sourceIp: string
  status: string
  grants: string[]
  createdAt: string
  updatedAt: string
}

const path = (id: string, action = '') => `/api/v1/requests/${encodeURIComponent(id)}${action}`

export const registerRequests: Register = (root, run) => {
  const group = root
    .command('requests')
    .description('handshake requests other instances sent here: accept, decline, revoke')
  apiFlags(group.command('list').description('incoming requests, oldest first'))
    .option('--status <status>', 'only requests in this status (e.g. Pending, Accepted)')
    .option('--instance <instanceId>', 'only the requests of this instance')
    .action(run(list))
  apiFlags(group.command('show').description('one request'))
    .argument('<id>', 'request id')
    .action(run(async (ctx, [id]) => show(ctx, await ctx.api().call('GET', path(id as string)))))
  apiFlags(
    group
      .command('accept')
      .description("accept a Pending request; without --grant it may use every namespace ('#')")
  )
    .argument('<id>', 'request id')
    .option(
      '--grant <namespace>',
      'a namespace the bridge may use, e.g. acme/plant1 (repeat for more)',
      (v: string, all: string[] = []) => [...all, v]
    )
    .action(
      run(async (ctx, [id], opts) => {
        const grants = opts.grant as string[] | undefined
        const body = grants ? { grants } : {}
        show(ctx, await ctx.api().call('POST', path(id as string, '/accept'), body))
      })
    )
  const actions: Array<[string, string]> = [
    ['decline', 'decline a Pending request'],
    ['revoke', 'revoke an Accepted request: its bridge is cut off within a second'],
  ]
  for (const [name, description] of actions) {
    apiFlags(group.command(name).description(description))
      .argument('<id>', 'request id')
      .action(
        run(async (ctx, [id]) =>
          show(ctx, await ctx.api().call('POST', path(id as string, `/${name}`)))
        )
      )
  }
}

async function list(ctx: Ctx, _args: unknown[], opts: Record<string, unknown>): Promise<void> {
  const query = new URLSearchParams()
  if (opts.status) query.set('status', opts.status as string)
  if (opts.instance) query.set('instanceId', opts.instance as string)
  const qs = query.toString() ? `?${query}` : ''
  const items = await ctx.api().list<RequestView>(`/api/v1/requests${qs}`)
  if (ctx.json) return printJson(ctx.io, items)
  if (items.length === 0) return printLines(ctx.io, 'no requests')
  printLines(
    ctx.io,
    table(
      ['ID', 'INSTANCE', 'SOURCE IP', 'STATUS', 'GRANTS', 'ARRIVED'],
      items.map((r) => [
        r.id,
        r.instanceId,
        r.sourceIp,
        r.status,
        r.grants.join(', ') || '-',
        r.createdAt,
      ])
    )
  )
}

function show(ctx: Ctx, r: RequestView): void {
  if (ctx.json) return printJson(ctx.io, r)
  printLines(
    ctx.io,
    keyValues([
      ['id', r.id],
      ['instance', r.instanceId],
      ['source ip', r.sourceIp],
      ['status', r.status],
      ['grants', r.grants.join(', ')],
      ['arrived', r.createdAt],
      ['updated', r.updatedAt],
    ])
  )
}
