import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * What the CLI's API commands (`cluster`, `route`) share: `--url`, `--data-dir`, `--json`, the
 * admin token from UB_ADMIN_TOKEN or the data folder (never a flag, which `ps` and the shell
 * history would show), and one GET with its error printed as one line.
 */
export interface ApiArgs {
  url: string
  dataDir: string
  json: boolean
  /** Arguments that are not flags, in order. */
  positional: string[]
}

export function parseApiArgs(
  command: string,
  argv: readonly string[],
  env: NodeJS.ProcessEnv
): ApiArgs | string {
  const args: ApiArgs = {
    url: `http://127.0.0.1:${env.UB_HTTP_PORT || 8080}`,
    dataDir: env.UB_DATA_DIR || '.data',
    json: false,
    positional: [],
  }
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined]
    if (!flag.startsWith('--')) {
      args.positional.push(argv[i]!)
      continue
    }
    if (flag === '--json') {
      args.json = true
      continue
    }
    if (flag !== '--url' && flag !== '--data-dir') return `${command}: unknown flag '${flag}'`
    const value = inline ?? argv[++i]
    if (!value) return `${command}: ${flag} needs a value`
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

/** GET `path` on the API: the body, or the exit code after one line on stderr. */
export async function getFromApi(
  command: string,
  args: ApiArgs,
  path: string,
  env: NodeJS.ProcessEnv
): Promise<{ body: unknown } | { exitCode: number }> {
  const token = adminToken(args.dataDir, env)
  if (!token) {
    console.error(
      `${command}: no admin token: set UB_ADMIN_TOKEN or point --data-dir at the folder holding admin-token (tried ${args.dataDir})`
    )
    return { exitCode: 2 }
  }
  const endpoint = `${args.url.replace(/\/+$/, '')}${path}`
  let res: Response
  try {
    res = await fetch(endpoint, { headers: { authorization: `Bearer ${token}` } })
  } catch (err) {
    console.error(`${command}: cannot reach ${endpoint}: ${(err as Error).cause ?? err}`)
    return { exitCode: 1 }
  }
  const body = (await res.json().catch(() => null)) as unknown
  if (res.status !== 200) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error
    console.error(
      `${command}: ${endpoint} answered ${res.status} ${error?.code ?? ''}: ${error?.message ?? ''}`
    )
    return { exitCode: 1 }
  }
  return { body }
}
