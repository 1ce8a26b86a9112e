import type { ClusterView, Member } from '../../common/presence.ts'
import { apiFlags, type Ctx, type Register } from './program.ts'
import { duration, printJson, printLines, table } from './io.ts'

const SHOWN_BRIDGES = 3 // per supervisor row; the rest are counted

/** `uns-bridge cluster`: the fabric's members as one handshake API sees them. */
export const registerCluster: Register = (root, run) => {
  apiFlags(
    root
      .command('cluster')
      .description('every member of the fabric (GET /api/v1/cluster) as a table')
  ).action(run(cluster))
}

async function cluster(ctx: Ctx): Promise<void> {
  const view = await ctx.api().call<ClusterView>('GET', '/api/v1/cluster')
  if (ctx.json) return printJson(ctx.io, view)
  printLines(ctx.io, formatCluster(view))
}

/** The members as an aligned table, then the counts per service. */
export function formatCluster(view: ClusterView): string {
  const header = ['SERVICE', 'MEMBER', 'HOST', 'PID', 'VERSION', 'UPTIME', 'LAST SEEN', 'DETAILS']
  const now = Date.now()
  const rows = view.members.map((m) => [
    m.service,
    m.memberId,
    m.host,
    String(m.pid),
    m.version,
    duration(m.uptimeMs),
    `${duration(Math.max(0, now - Date.parse(m.lastSeenAt)))} ago`,
    details(m),
  ])
  const counts = Object.entries(view.counts)
    .map(([service, n]) => `${service} ${n}`)
    .join(', ')
  const omitted = view.omitted > 0 ? ` (${view.omitted} more not listed)` : ''
  const total = `${view.members.length} member${view.members.length === 1 ? '' : 's'}`
  return [table(header, rows), '', `${total}: ${counts}${omitted}`].join('\n')
}

function details(m: Member): string {
  if (m.gateway) {
    const ports = Object.entries(m.gateway.ports)
      .map(([name, port]) => `${name} ${port}`)
      .join(', ')
    return `${m.gateway.gatewayId}: ${m.gateway.clients} clients; ${ports}`
  }
  if (m.supervisor) {
    const { supervisorId, bridgeCount, bridges } = m.supervisor
    const shown = bridges.slice(0, SHOWN_BRIDGES).map((b) => `${b.upstreamId} ${b.state}`)
    const more = bridgeCount > shown.length ? `, +${bridgeCount - shown.length} more` : ''
    return `${supervisorId}: ${bridgeCount} bridges${shown.length ? ': ' : ''}${shown.join(', ')}${more}`
  }
  return ''
}
