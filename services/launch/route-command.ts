import { getFromApi, parseApiArgs } from './api-command.ts'

export const ROUTE_USAGE = `Usage: uns-bridge route <topic> [--url <http api>] [--data-dir <dir>] [--json]

Where one concrete topic goes from this instance and where it can come from
(GET /api/v1/route): each matching binding, the topic on the upstream, the
link's health and its path on the mesh spanning tree.
  --url       the handshake API (default http://127.0.0.1:<UB_HTTP_PORT or 8080>)
  --data-dir  where admin-token is read when UB_ADMIN_TOKEN is not set (default UB_DATA_DIR or .data)
  --json      print the API's answer as it is`

interface Hop {
  upstreamId: string
  host: string
  peerInstanceId: string | null
  direction: string
  topic: string
  link: string
  treePath: string[] | null
  closesCycle: boolean
}

interface Plan {
  topic: string
  instanceId: string
  out: Hop[]
  in: Hop[]
  reaches: string[]
}

/** `uns-bridge route <topic>`: the dry run, one line per hop. */
export async function routeCommand(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(ROUTE_USAGE)
    return 0
  }
  const args = parseApiArgs('route', argv, env)
  if (typeof args === 'string' || args.positional.length !== 1) {
    const problem = typeof args === 'string' ? args : 'route: give exactly one topic'
    console.error(`${problem}\n\n${ROUTE_USAGE}`)
    return 2
  }
  const path = `/api/v1/route?topic=${encodeURIComponent(args.positional[0]!)}`
  const got = await getFromApi('route', args, path, env)
  if ('exitCode' in got) return got.exitCode
  console.log(args.json ? JSON.stringify(got.body, null, 2) : formatRoute(got.body as Plan))
  return 0
}

export function formatRoute(plan: Plan): string {
  const hop = (h: Hop, arrow: string) => {
    const peer = h.peerInstanceId ?? 'peer unknown'
    const path = h.treePath ? ` via ${h.treePath.join(' → ')}` : ''
    const cycle = h.closesCycle ? ' (would close a cycle: held Blocked)' : ''
    return `  ${arrow} ${h.topic}  on ${h.upstreamId} (${h.host}, ${peer})  ${h.direction}, link ${h.link}${path}${cycle}`
  }
  const lines = [`${plan.topic} on ${plan.instanceId}`]
  if (plan.out.length === 0 && plan.in.length === 0) lines.push('  no binding covers it')
  for (const h of plan.out) lines.push(hop(h, 'goes to   '))
  for (const h of plan.in) lines.push(hop(h, 'comes from'))
  if (plan.reaches.length) lines.push(`  reaches now: ${plan.reaches.join(', ')}`)
  return lines.join('\n')
}
