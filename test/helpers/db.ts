import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { createDb, type Db, type DbKind } from '../../db/client.ts'
import { seedPglite } from './pg-template.ts'
import { migrateDb } from '../../db/migrate.ts'

/** The server the tests create their databases on; DATABASE_URL overrides it. */
export const TEST_POSTGRES_URL =
  process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

export interface TestDb {
  db: Db
  kind: DbKind
  /** Postgres: the run's own database, for a second client (a replica). */
  databaseUrl?: string
  /** PGlite: the folder, to reopen it after a restart. */
  dataDir?: string
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** A migrated, empty database of its own: `ub_t_<random>` on Postgres, a temp folder for PGlite. */
export async function createTestDb(
  kind: DbKind,
  { migrate = true }: { migrate?: boolean } = {}
): Promise<TestDb> {
  let db: Db
  let cleanup: () => Promise<void>
  let extra: { databaseUrl?: string; dataDir?: string }
  if (kind === 'postgres') {
    const name = `ub_t_${randomBytes(6).toString('hex')}`
    const admin = postgres(TEST_POSTGRES_URL, { max: 1, onnotice: () => {} })
    try {
      await admin.unsafe(`create database "${name}"`)
    } finally {
      await admin.end({ timeout: 5 })
    }
    const databaseUrl = withDatabase(TEST_POSTGRES_URL, name)
    db = createDb({ databaseUrl, dataDir: tmpdir() })
    extra = { databaseUrl }
    cleanup = async () => {
      const adm = postgres(TEST_POSTGRES_URL, { max: 1, onnotice: () => {} })
      try {
        // `with (force)` ends connections a crashed test left behind (Postgres ≥ 13).
        await adm.unsafe(`drop database if exists "${name}" with (force)`)
      } finally {
        await adm.end({ timeout: 5 })
      }
    }
  } else {
    const dataDir = await mkdtemp(join(tmpdir(), 'ub-pglite-'))
    seedPglite(dataDir)
    db = createDb({ dataDir })
    extra = { dataDir }
    cleanup = () => rm(dataDir, { recursive: true, force: true })
  }
  if (migrate) await migrateDb(db)
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= (async () => {
      await db.close()
      await cleanup()
    })())
  return { db, kind, ...extra, close, [Symbol.asyncDispose]: close }
}
