import { getFromApi, parseApiArgs } from './api-command.ts'
import type { ClusterView, Member } from '../common/presence.ts'

export const CLUSTER_USAGE = `Usage: uns-bridge cluster [--url <http api>] [--data-dir <dir>] [--json]

Lists every member of the fabric (GET /api/v1/cluster) as a table.
  --url       the handshake API (default http://127.0.0.1:<UB_HTTP_PORT or 8080>)
  --data-dir  where admin-token is read when UB_ADMIN_TOKEN is not set (default UB_DATA_DIR or .data)
  --json      print the API's answer as it is`

const SHOWN_BRIDGES = 3 // per supervisor row; the rest are counted

/** `uns-bridge cluster`: the fabric's members as one handshake API sees them. */
export async function clusterCommand(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(CLUSTER_USAGE)
    return 0
  }
  const args = parseApiArgs('cluster', argv, env)
  if (typeof args === 'string' || args.positional.length > 0) {
    const problem = typeof args === 'string' ? args : `cluster: unexpected '${args.positional[0]}'`
    console.error(`${problem}\n\n${CLUSTER_USAGE}`)
    return 2
  }
  const got = await getFromApi('cluster', args, '/api/v1/cluster', env)
  if ('exitCode' in got) return got.exitCode
  console.log(
    args.json ? JSON.stringify(got.body, null, 2) : formatCluster(got.body as ClusterView)
  )
  return 0
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
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  const counts = Object.entries(view.counts)
    .map(([service, n]) => `${service} ${n}`)
    .join(', ')
  const omitted = view.omitted > 0 ? ` (${view.omitted} more not listed)` : ''
  const total = `${view.members.length} member${view.members.length === 1 ? '' : 's'}`
  return [line(header), ...rows.map(line), '', `${total}: ${counts}${omitted}`].join('\n')
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

/** `3d 4h`, `2h 5m`, `4m 12s`, `9s`: the two largest units. */
function duration(ms: number): string {
  const s = Math.floor(ms / 1_000)
  const units: Array<[string, number]> = [
    ['d', Math.floor(s / 86_400)],
    ['h', Math.floor(s / 3_600) % 24],
    ['m', Math.floor(s / 60) % 60],
    ['s', s % 60],
  ]
  const first = units.findIndex(([, n]) => n > 0)
  if (first === -1) return '0s'
  return units
    .slice(first, first + 2)
    .map(([u, n]) => `${n}${u}`)
    .join(' ')
}
