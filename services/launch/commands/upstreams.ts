import { readFileSync } from 'node:fs'
import { Option, type Command } from 'commander'
import { apiFlags, integer, type Ctx, type Register } from './program.ts'
import { UsageError, cell, keyValues, printJson, printLines, table } from './io.ts'

/** An upstream as the API answers it (the fields the CLI shows; the JSON has them all). */
export interface UpstreamView {
  id: string
  kind: string
  host: string
  brokerPort: number
  httpPort: number
  status: string
  active: boolean
  bindings: Array<{ source: string; target: string; direction?: string }>
  grants: string[]
  remoteRequestId: string | null
  lastError: string | null
  withdrawalOwed: boolean
  username: string | null
  tls: Record<string, unknown> | null
  createdAt: string
  updatedAt: string
  link?: Record<string, unknown> | null
  withdrawal?: { ok: boolean; error: string | null }
}

const DIRECTIONS = ['out', 'in', 'both']
const path = (id: string, action = '') => `/api/v1/upstreams/${encodeURIComponent(id)}${action}`

export const registerUpstreams: Register = (root, run) => {
  const group = root
    .command('upstreams')
    .description('the upstreams this instance bridges to: add, bind, activate, delete')
  apiFlags(group.command('list').description('every upstream, as a table'))
    .option('--status <status>', 'only upstreams in this status (e.g. Active, Pending)')
    .action(run(list))
  addCreate(group, run)
  addEdit(group, run)
  apiFlags(group.command('show').description('one upstream, with its bridge link state'))
    .argument('<id>', 'upstream id')
    .action(run(async (ctx, [id]) => show(ctx, await ctx.api().call('GET', path(id as string)))))
  apiFlags(
    group
      .command('bind')
      .description(
        'replace the bindings: each SOURCE:TARGET[:DIRECTION], DIRECTION out (default), in or both; applied live'
      )
  )
    .argument('<id>', 'upstream id')
    .argument('[bindings...]', 'e.g. plant1/+/line3:acme/{1}/line3 or cmd/#:acme/cmd/#:in')
    .option('--clear', 'remove every binding')
    .action(run(bind))
  const simple: Array<[string, string, string, string]> = [
    ['activate', 'POST', '/activate', 'start bridging (needs Approved and at least one binding)'],
    ['deactivate', 'POST', '/deactivate', 'stop bridging, keep the approval'],
    ['refresh', 'POST', '/refresh', 'ask the upstream server for the answer now'],
    ['request', 'POST', '/request', 'ask again after a decline or revocation'],
    ['delete', 'DELETE', '', 'stop the bridge, withdraw the request on the server, delete'],
  ]
  for (const [name, method, action, description] of simple) {
    apiFlags(group.command(name).description(description))
      .argument('<id>', 'upstream id')
      .action(
        run(async (ctx, [id]) =>
          show(ctx, await ctx.api().call(method, path(id as string, action)))
        )
      )
  }
}

function addCreate(group: Command, run: Parameters<Register>[1]): void {
  const port = integer(1, 65_535)
  apiFlags(
    group
      .command('create')
      .description(
        'add an upstream: a uns-bridge (sends the handshake request, Pending until accepted) or, --kind mqtt, a plain broker'
      )
  )
    .requiredOption('--host <url>', 'mqtt://, mqtts://, ws:// or wss:// and a host name, no port')
    .option('--broker-port <port>', 'its MQTT port (default 1883)', port)
    .option('--http-port <port>', 'its handshake API port (kind uns; default 8080)', port)
    .addOption(
      new Option('--kind <kind>', 'uns: another uns-bridge; mqtt: a plain broker')
        .choices(['uns', 'mqtt'])
        .default('uns')
    )
    .option('--username <name>', 'MQTT user name (kind mqtt)')
    .option('--password-stdin', 'read the MQTT password (kind mqtt) from stdin')
    .option('--ca <file>', 'TLS: PEM file of the CA(s) to trust')
    .option('--cert <file>', 'TLS: PEM file of our client certificate')
    .option('--key <file>', 'TLS: PEM file of its private key (stored encrypted, never shown)')
    .option('--servername <name>', 'TLS: server name to expect (SNI)')
    .option('--insecure', 'TLS: do not verify the server certificate (rejectUnauthorized false)')
    .action(
      run(async (ctx, _args, opts) =>
        show(ctx, await ctx.api().call('POST', '/api/v1/upstreams', await createBody(opts)))
      )
    )
}

function addEdit(group: Command, run: Parameters<Register>[1]): void {
  const port = integer(1, 65_535)
  apiFlags(
    group
      .command('edit')
      .description(
        'edit the connection in place (audited): broker port, transport and TLS keep the state; another host or HTTP port asks that server again (Pending)'
      )
  )
    .argument('<id>', 'upstream id')
    .option('--host <url>', 'mqtt://, mqtts://, ws:// or wss:// and a host name, no port')
    .option('--broker-port <port>', 'its MQTT port', port)
    .option('--http-port <port>', 'its handshake API port (kind uns)', port)
    .option('--ca <pem-or-file>', 'TLS: the CA(s) to trust, PEM text or a PEM file')
    .option('--cert <pem-or-file>', 'TLS: our client certificate, PEM text or a PEM file')
    .option('--key <pem-or-file>', 'TLS: its private key (stored encrypted, never shown or logged)')
    .option('--servername <name>', 'TLS: server name to expect (SNI)')
    .option('--insecure', 'TLS: do not verify the server certificate (rejectUnauthorized false)')
    .option('--verify', 'TLS: verify the server certificate again (undoes --insecure)')
    .option('--clear-tls', 'remove every TLS option')
    .action(
      run(async (ctx, [id], opts) =>
        show(ctx, await ctx.api().call('PATCH', path(id as string), editBody(opts)))
      )
    )
}

/** A PEM value: given as text, or read from the file it names. */
const pemOrFile = (value: string, flag: string) =>
  /-----BEGIN [A-Z0-9 ]+-----/.test(value) ? value : readPem(value, flag)

/** The PATCH body from the flags: only what was given; TLS fields change one by one. */
export function editBody(opts: Record<string, unknown>): Record<string, unknown> {
  if (opts.insecure && opts.verify) throw new UsageError('--insecure and --verify contradict')
  const tls = {
    ...(opts.ca ? { ca: pemOrFile(opts.ca as string, '--ca') } : {}),
    ...(opts.cert ? { cert: pemOrFile(opts.cert as string, '--cert') } : {}),
    ...(opts.key ? { key: pemOrFile(opts.key as string, '--key') } : {}),
    ...(opts.servername ? { servername: opts.servername } : {}),
    ...(opts.insecure ? { rejectUnauthorized: false } : {}),
    ...(opts.verify ? { rejectUnauthorized: null } : {}),
  }
  if (opts.clearTls && Object.keys(tls).length > 0)
    throw new UsageError('--clear-tls takes no other TLS option')
  const body = {
    ...(opts.host === undefined ? {} : { host: opts.host }),
    ...(opts.brokerPort === undefined ? {} : { brokerPort: opts.brokerPort }),
    ...(opts.httpPort === undefined ? {} : { httpPort: opts.httpPort }),
    ...(Object.keys(tls).length > 0 ? { tls } : {}),
    ...(opts.clearTls ? { tls: null } : {}),
  }
  if (Object.keys(body).length === 0)
    throw new UsageError('nothing to edit: give --host, --broker-port, --http-port or a TLS option')
  return body
}

/** The create body from the flags: only what was given, so the API's defaults apply. */
async function createBody(opts: Record<string, unknown>): Promise<Record<string, unknown>> {
  const kind = opts.kind as string
  if (kind === 'mqtt' && opts.httpPort !== undefined)
    throw new UsageError('--http-port is for kind uns: a plain broker has no handshake API')
  if (kind === 'uns' && (opts.username !== undefined || opts.passwordStdin))
    throw new UsageError('--username and --password-stdin are for --kind mqtt')
  const tls = {
    ...(opts.ca ? { ca: readPem(opts.ca as string, '--ca') } : {}),
    ...(opts.cert ? { cert: readPem(opts.cert as string, '--cert') } : {}),
    ...(opts.key ? { key: readPem(opts.key as string, '--key') } : {}),
    ...(opts.servername ? { servername: opts.servername } : {}),
    ...(opts.insecure ? { rejectUnauthorized: false } : {}),
  }
  return {
    kind,
    host: opts.host,
    ...(opts.brokerPort === undefined ? {} : { brokerPort: opts.brokerPort }),
    ...(opts.httpPort === undefined ? {} : { httpPort: opts.httpPort }),
    ...(opts.username === undefined ? {} : { username: opts.username }),
    ...(opts.passwordStdin ? { password: await readStdin() } : {}),
    ...(Object.keys(tls).length > 0 ? { tls } : {}),
  }
}

function readPem(file: string, flag: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`)
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
}

async function list(ctx: Ctx, _args: unknown[], opts: Record<string, unknown>): Promise<void> {
  const query = opts.status ? `?status=${encodeURIComponent(opts.status as string)}` : ''
  const items = await ctx.api().list<UpstreamView>(`/api/v1/upstreams${query}`)
  if (ctx.json) return printJson(ctx.io, items)
  if (items.length === 0) return printLines(ctx.io, 'no upstreams')
  printLines(ctx.io, upstreamTable(items))
}

export function upstreamTable(items: UpstreamView[]): string {
  return table(
    ['ID', 'KIND', 'HOST', 'PORTS', 'STATUS', 'ACTIVE', 'BINDINGS', 'LAST ERROR'],
    items.map((u) => [
      u.id,
      u.kind,
      u.host,
      u.kind === 'uns' ? `${u.brokerPort}/${u.httpPort}` : String(u.brokerPort),
      u.status,
      u.active ? 'yes' : 'no',
      String(u.bindings.length),
      cell(u.lastError),
    ])
  )
}

function bindingText(b: { source: string; target: string; direction?: string }): string {
  return `${b.source} → ${b.target} (${b.direction ?? 'out'})`
}

/** One upstream as `key value` lines, its bindings and link below. */
export function show(ctx: Ctx, u: UpstreamView): void {
  if (ctx.json) return printJson(ctx.io, u)
  const pairs: Array<[string, unknown]> = [
    ['id', u.id],
    ['kind', u.kind],
    ['host', u.host],
    ['broker port', u.brokerPort],
    ...(u.kind === 'uns' ? ([['http port', u.httpPort]] as Array<[string, unknown]>) : []),
    ['status', u.status],
    ['active', u.active ? 'yes' : 'no'],
    ['grants', u.grants.join(', ')],
    ['bindings', u.bindings.length === 0 ? 'none' : u.bindings.map(bindingText).join('; ')],
    ['last error', u.lastError],
    ['updated', u.updatedAt],
  ]
  if (u.tls) pairs.push(['tls', Object.keys(u.tls).join(', ')])
  if (u.withdrawalOwed) pairs.push(['withdrawal', 'owed: retried until the server answers'])
  if (u.withdrawal) {
    pairs.push(['withdrawn', u.withdrawal.ok ? 'yes' : `no: ${u.withdrawal.error ?? ''}`])
  }
  if (u.link !== undefined) pairs.push(['link', linkText(u.link)])
  printLines(ctx.io, keyValues(pairs))
}

/** A link's state in one line: `Active, 12 forwarded, 0 waiting, lag 3 ms`. */
export function linkText(link: Record<string, unknown> | null | undefined): string {
  if (!link) return 'none'
  const parts = [String(link.state ?? '?')]
  if (typeof link.forwarded === 'number') parts.push(`${link.forwarded} forwarded`)
  if (typeof link.waiting === 'number') parts.push(`${link.waiting} waiting`)
  if (typeof link.lagMs === 'number') parts.push(`lag ${link.lagMs} ms`)
  if (link.lastError) parts.push(`error: ${String(link.lastError)}`)
  return parts.join(', ')
}

/** `SOURCE:TARGET[:DIRECTION]` → a binding; a usage error naming the argument otherwise. */
export function parseBinding(text: string): { source: string; target: string; direction: string } {
  const parts = text.split(':')
  const direction = parts.length === 3 ? parts[2]! : 'out'
  if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1])
    throw new UsageError(`'${text}' is not SOURCE:TARGET[:DIRECTION]`)
  if (!DIRECTIONS.includes(direction))
    throw new UsageError(`'${text}': direction must be out, in or both, not '${direction}'`)
  return { source: parts[0], target: parts[1], direction }
}

async function bind(ctx: Ctx, args: unknown[], opts: Record<string, unknown>): Promise<void> {
  const [id, given] = args as [string, string[]]
  if (given.length === 0 && !opts.clear)
    throw new UsageError('give at least one SOURCE:TARGET[:DIRECTION], or --clear')
  if (given.length > 0 && opts.clear) throw new UsageError('--clear takes no bindings')
  const bindings = given.map(parseBinding)
  show(ctx, await ctx.api().call('PUT', path(id, '/bindings'), bindings))
}
