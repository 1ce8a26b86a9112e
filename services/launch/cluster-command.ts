import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ClusterView, Member } from '../common/presence.ts'

export const CLUSTER_USAGE = `Usage: uns-bridge cluster [--url <http api>] [--data-dir <dir>] [--json]

Lists every member of the fabric (GET /api/v1/cluster) as a table.
  --url       the handshake API (default http://127.0.0.1:<UB_HTTP_PORT or 8080>)
  --data-dir  where admin-token is read when UB_ADMIN_TOKEN is not set (default UB_DATA_DIR or .data)
  --json      print the API's answer as it is`

const SHOWN_BRIDGES = 3 // per supervisor row; the rest are counted

interface ClusterArgs {
  url: string
  dataDir: string
  json: boolean
}

/**
 * `uns-bridge cluster`: the fabric's members as one handshake API sees them. The token comes from
 * UB_ADMIN_TOKEN or the data folder's admin-token file, never from a flag, which `ps` and the
 * shell history would show.
 */
export async function clusterCommand(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(CLUSTER_USAGE)
    return 0
  }
  const args = parseArgs(argv, env)
  if (typeof args === 'string') {
    console.error(`${args}\n\n${CLUSTER_USAGE}`)
    return 2
  }
  const token = adminToken(args.dataDir, env)
  if (!token) {
    console.error(
      `cluster: no admin token: set UB_ADMIN_TOKEN or point --data-dir at the folder holding admin-token (tried ${args.dataDir})`
    )
    return 2
  }
  const endpoint = `${args.url.replace(/\/+$/, '')}/api/v1/cluster`
  let res: Response
  try {
    res = await fetch(endpoint, { headers: { authorization: `Bearer ${token}` } })
  } catch (err) {
    console.error(`cluster: cannot reach ${endpoint}: ${(err as Error).cause ?? err}`)
    return 1
  }
  const body = (await res.json().catch(() => null)) as unknown
  if (res.status !== 200) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error
    console.error(
      `cluster: ${endpoint} answered ${res.status} ${error?.code ?? ''}: ${error?.message ?? ''}`
    )
    return 1
  }
  console.log(args.json ? JSON.stringify(body, null, 2) : formatCluster(body as ClusterView))
  return 0
}

function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ClusterArgs | string {
  const args: ClusterArgs = {
    url: `http://127.0.0.1:${env.UB_HTTP_PORT || 8080}`,
    dataDir: env.UB_DATA_DIR || '.data',
    json: false,
  }
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined]
    if (flag === '--json') {
      args.json = true
      continue
    }
    if (flag !== '--url' && flag !== '--data-dir') return `cluster: unknown flag '${flag}'`
    const value = inline ?? argv[++i]
    if (!value) return `cluster: ${flag} needs a value`
    if (flag === '--url') args.url = value
    else args.dataDir = value
  }
  return args
}

function adminToken(dataDir: string, env: NodeJS.ProcessEnv): string | null {
  if (env.UB_ADMIN_TOKEN) return env.UB_ADMIN_TOKEN
  try {
    return readFileSync(join(dataDir, 'admin-token'), 'utf8').trim() || null
  } catch {
    return null
  }
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
