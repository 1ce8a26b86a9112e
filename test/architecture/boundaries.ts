import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'

/**
 * The import rules of ARCHITECTURE.md §2 (Rooms: what each part owns and may import), as a checker over the
 * source tree: every relative import is resolved and judged by the folders of its two ends.
 */
export const SERVICES = ['gateway', 'supervisor', 'handshake', 'store', 'files'] as const

export interface Violation {
  file: string
  imports: string
  rule: string
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g

/** Every relative import specifier in `source`. */
export function relativeImports(source: string): string[] {
  return [...source.matchAll(IMPORT)].map((m) => m[2]!)
}

/** The room a repository path belongs to: `service:<name>`, `common`, `contracts`, `launch`, `machines`, `db`, … */
export function roomOf(path: string): string {
  const parts = path.split('/')
  if (parts[0] === 'services') {
    const second = parts[1] ?? ''
    if ((SERVICES as readonly string[]).includes(second)) return `service:${second}`
    if (parts.length === 2) return 'services-root'
    return second
  }
  return parts[0] ?? ''
}

/** Why `from` may not import `to` (both repository paths), or null when it may. */
export function ruleBroken(from: string, to: string): string | null {
  const a = roomOf(from)
  const b = roomOf(to)
  if (a === b) return null
  if (a === 'services-root')
    return 'services/ holds the service folders only; files belong in a room'
  if (a === 'machines') return 'machines are pure: they import xstate and each other only'
  if (b === 'test') return 'production code never imports tests'
  if (b.startsWith('service:')) {
    if (a === 'common' || a === 'contracts' || a === 'db')
      return `${a}/ never imports a service (it is what services share)`
    if (!to.endsWith('/index.ts') || to.split('/').length !== 3)
      return `another service is reached through its index.ts only (${b.slice(8)})`
    return null
  }
  if (b === 'launch') return 'nothing imports the launcher; it imports the services'
  if (b === 'db' && !(a === 'service:store' || a === 'launch' || a === 'deploy'))
    return 'only the binding store and the launcher touch the database'
  if (a === 'common' && b !== 'machines') return 'common/ imports only common/ and machines/'
  if (a === 'contracts' && !(b === 'common' || b === 'machines'))
    return 'contracts/ imports only contracts/, common/ and machines/'
  if (a === 'db' && !(b === 'contracts' || b === 'machines'))
    return 'db/ imports only contracts/ (types) and machines/'
  return null
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return name === 'node_modules' ? [] : sourceFiles(path)
    return /\.(ts|mjs)$/.test(name) ? [path] : []
  })
}

/** Every import in the production tree that breaks a rule. */
export function findViolations(root: string, folders = ['services', 'machines', 'db', 'deploy']) {
  const out: Violation[] = []
  for (const folder of folders) {
    for (const file of sourceFiles(join(root, folder))) {
      const from = relative(root, file).split(sep).join('/')
      for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
        const to = relative(root, resolve(dirname(file), spec))
          .split(sep)
          .join('/')
        const rule = ruleBroken(from, to)
        if (rule) out.push({ file: from, imports: to, rule })
      }
    }
  }
  return out
}
