import { PGlite } from '@electric-sql/pglite'
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A freshly initialised PGlite cluster, made once per `npm test` and copied into each new data
 * folder a test starts an instance on. PGlite's initdb takes about 7 s of CPU (most of a first
 * start) and the suite starts some sixty instances on two cores; a copy of the same cluster is
 * what initdb would have written (no schema, no rows: each instance still migrates it and makes
 * its own identity). Only for data folders the tests make; the first-start tests of the product
 * start on empty folders as users do.
 */
export const PG_TEMPLATE_ENV = 'UB_TEST_PG_TEMPLATE'

export async function makePgTemplate(): Promise<{ dir: string; remove(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'ub-pg-template-'))
  const db = new PGlite(join(dir, 'pg'))
  await db.waitReady
  await db.close()
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Put the template cluster in `<dataDir>/pg` when there is one and the folder has none yet. */
export function seedPglite(dataDir: string): void {
  const template = process.env[PG_TEMPLATE_ENV]
  if (!template || existsSync(join(dataDir, 'pg'))) return
  cpSync(join(template, 'pg'), join(dataDir, 'pg'), { recursive: true })
}
