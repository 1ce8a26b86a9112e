import { createHash } from 'node:crypto'
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join } from 'node:path'
import { createDb, pgliteDir } from './client.ts'
import { migrateDb, MIGRATIONS_FOLDER } from './migrate.ts'

/**
 * PGlite's initdb and the first migration run are most of a first start (about 3 s of wasm on a
 * 2-core machine); copying the 39 MB they leave takes a tenth of that. So they run once per PGlite
 * version and set of migrations, into node_modules/.cache, and an empty database folder starts as
 * a copy. The template holds the schema and nothing else; on the copy, migrations run as on any
 * database (nothing left to apply). Its name carries both versions, so an old one is never used.
 * A template made with other PGlite options (extensions, an encoding) would need them in its name.
 */
export function pgliteTemplateDir(): string | null {
  try {
    let dir = dirname(createRequire(import.meta.url).resolve('@electric-sql/pglite'))
    while (!existsSync(join(dir, 'package.json'))) {
      if (dirname(dir) === dir) return null
      dir = dirname(dir)
    }
    const { version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
      version: string
    }
    // …/node_modules/@electric-sql/pglite → …/node_modules/.cache/uns-bridge/
    const cache = join(dir, '..', '..', '.cache', 'uns-bridge')
    return join(cache, `pglite-${version}-${migrationsHash()}`)
  } catch {
    return null
  }
}

/** Every file of the migrations folder (SQL and drizzle's journal), by name. */
function migrationsHash(): string {
  const hash = createHash('sha256')
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : 1
    )) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else hash.update(`${entry.name}\0`).update(readFileSync(path))
    }
  }
  walk(MIGRATIONS_FOLDER)
  return hash.digest('hex').slice(0, 16)
}

const isEmptyOrMissing = (dir: string) => !existsSync(dir) || readdirSync(dir).length === 0

/**
 * When the data folder has no database yet: make the template if missing (once; `npm install`
 * does it too), then copy it in. Copied beside and renamed into place, so a copy cut short never
 * looks like a database. Anything failing (a read-only node_modules, a full disk) leaves the
 * folder as it was, and PGlite runs initdb in it as without a template. True when it copied.
 */
export async function seedPgliteDir(dataDir: string): Promise<boolean> {
  const dir = pgliteDir(dataDir)
  if (!isEmptyOrMissing(dir)) return false
  const template = pgliteTemplateDir()
  if (!template || !(await ensurePgliteTemplate(template))) return false
  const partial = `${dir}.seeding-${process.pid}`
  try {
    // A copy cut short by a crash is garbage: one process uses a data folder (start locks it).
    mkdirSync(dataDir, { recursive: true })
    for (const name of readdirSync(dataDir)) {
      if (name.startsWith(`${basename(dir)}.seeding-`)) removeQuietly(join(dataDir, name))
    }
    cpSync(pgliteDir(template), partial, { recursive: true })
    rmSync(dir, { recursive: true, force: true })
    renameSync(partial, dir)
    return true
  } catch {
    removeQuietly(partial)
    return false
  }
}

/** The template at `template`, made now when missing; false when it cannot be. */
export async function ensurePgliteTemplate(template = pgliteTemplateDir()): Promise<boolean> {
  if (!template) return false
  if (existsSync(join(pgliteDir(template), 'PG_VERSION'))) return true
  const partial = `${template}.making-${process.pid}`
  try {
    mkdirSync(partial, { recursive: true })
    const db = createDb({ dataDir: partial })
    try {
      await migrateDb(db)
    } finally {
      await db.close()
    }
    // Two first starts at once: one rename wins, the other finds the template there.
    try {
      renameSync(partial, template)
    } catch (err) {
      if (!existsSync(join(pgliteDir(template), 'PG_VERSION'))) throw err
    }
    dropOtherTemplates(template)
    return true
  } catch {
    return false
  } finally {
    removeQuietly(partial)
  }
}

/** Cleaning up after a failure must not turn it into a failed start. */
function removeQuietly(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true })
  } catch {
    // the start goes on without a template; what is left is in the cache, not the data folder
  }
}

/** Templates of other versions are 39 MB each and never used again. */
function dropOtherTemplates(keep: string): void {
  const cache = dirname(keep)
  for (const name of readdirSync(cache)) {
    const path = join(cache, name)
    if (name.startsWith('pglite-') && !name.includes('.making-') && path !== keep) {
      removeQuietly(path)
    }
  }
}
