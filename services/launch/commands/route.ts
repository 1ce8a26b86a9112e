import { apiFlags, type Ctx, type Register } from './program.ts'
import { printJson, printLines } from './io.ts'

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
export const registerRoute: Register = (root, run) => {
  apiFlags(
    root
      .command('route')
      .description(
        'where one concrete topic goes from this instance and where it can come from (GET /api/v1/route): ' +
          "each matching binding, the topic on the upstream, the link's health and its path on the mesh spanning tree"
      )
  )
    .argument('<topic>', 'a concrete topic, e.g. plant1/line3/temp')
    .action(run(route))
}

async function route(ctx: Ctx, [topic]: unknown[]): Promise<void> {
  const plan = await ctx
    .api()
    .call<Plan>('GET', `/api/v1/route?topic=${encodeURIComponent(topic as string)}`)
  if (ctx.json) return printJson(ctx.io, plan)
  printLines(ctx.io, formatRoute(plan))
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
