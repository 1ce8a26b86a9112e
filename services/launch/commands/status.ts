import { apiFlags, type Ctx, type Register } from './program.ts'
import { cell, duration, keyValues, printJson, printLines, table } from './io.ts'
import type { UpstreamView } from './upstreams.ts'

interface InstanceView {
  instanceId: string
  version: string
  services: string[]
  gateways: Array<{
    gatewayId: string
    clients: number
    messagesIn: number
    messagesOut: number
    retained: number
    uptimeMs: number
    ports: Record<string, number>
  }>
}

const DETAIL_CONCURRENCY = 8 // link states asked at once: one GET per upstream

export const registerStatus: Register = (root, run) => {
  apiFlags(
    root
      .command('status')
      .description(
        "this instance (id, version, services, gateways) and its links: each upstream's state and link health"
      )
  )
    .option('--all', 'list Deleted upstreams too')
    .action(run(status))
}

async function status(ctx: Ctx, _args: unknown[], opts: Record<string, unknown>): Promise<void> {
  const api = ctx.api()
  const [instance, all] = await Promise.all([
    api.call<InstanceView>('GET', '/api/v1/instance'),
    api.list<UpstreamView>('/api/v1/upstreams'),
  ])
  const shown = opts.all ? all : all.filter((u) => u.status !== 'Deleted')
  const upstreams = await mapLimited(shown, DETAIL_CONCURRENCY, (u) =>
    api.call<UpstreamView>('GET', `/api/v1/upstreams/${encodeURIComponent(u.id)}`)
  )
  if (ctx.json) return printJson(ctx.io, { instance, upstreams })
  printLines(ctx.io, statusText(instance, upstreams))
}

export function statusText(instance: InstanceView, upstreams: UpstreamView[]): string {
  const clients = instance.gateways.reduce((n, g) => n + g.clients, 0)
  const lines = [
    keyValues([
      ['instance', instance.instanceId],
      ['version', instance.version],
      ['services', instance.services.join(', ')],
      ['gateways', `${instance.gateways.length} (${clients} clients)`],
    ]),
  ]
  if (instance.gateways.length > 0) {
    lines.push(
      '',
      table(
        ['GATEWAY', 'CLIENTS', 'IN', 'OUT', 'RETAINED', 'UPTIME', 'PORTS'],
        instance.gateways.map((g) => [
          g.gatewayId,
          String(g.clients),
          String(g.messagesIn),
          String(g.messagesOut),
          String(g.retained),
          duration(g.uptimeMs),
          Object.entries(g.ports)
            .map(([name, port]) => `${name} ${port}`)
            .join(', '),
        ])
      )
    )
  }
  lines.push('')
  if (upstreams.length === 0) {
    lines.push('no links (uns-bridge upstreams create …)')
    return lines.join('\n')
  }
  lines.push(
    table(
      [
        'UPSTREAM',
        'HOST',
        'STATUS',
        'ACTIVE',
        'LINK',
        'FORWARDED',
        'WAITING',
        'LAG',
        'BACKLOG',
        'OLDEST',
        'ERROR',
      ],
      upstreams.map((u) => {
        const link = u.link ?? null
        const num = (k: string) => (typeof link?.[k] === 'number' ? String(link[k]) : '-')
        return [
          u.id,
          u.kind === 'uns'
            ? `${u.host}:${u.brokerPort}/${u.httpPort}`
            : `${u.host}:${u.brokerPort}`,
          u.status,
          u.active ? 'yes' : 'no',
          link ? `${String(link.state ?? '?')}${link.silent === true ? ' (silent)' : ''}` : 'none',
          num('forwarded'),
          num('waiting'),
          typeof link?.lagMs === 'number' ? `${link.lagMs} ms` : '-',
          num('backlog'),
          typeof link?.oldestUnsentAt === 'string'
            ? `${Math.max(0, Math.round((Date.now() - Date.parse(link.oldestUnsentAt)) / 1_000))} s`
            : '-',
          cell(link?.lastError ?? u.lastError),
        ]
      })
    )
  )
  return lines.join('\n')
}

/** `fn` over `items` with at most `limit` running at once, results in order. */
async function mapLimited<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}
