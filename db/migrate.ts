import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import type { PgliteDatabase } from 'drizzle-orm/pglite'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import postgres from 'postgres'
import type { Db } from './client.ts'

/** Beside this module, so `migrate` works from any working directory (and from node_modules). */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('./migrations', import.meta.url))

/**
 * drizzle's `migrate()` takes no lock, so two store replicas starting together would both apply
 * the same migration (ARCHITECTURE.md §13). Every migrator holds this session-level advisory lock.
 */
export const MIGRATION_LOCK_KEY = 0x75_6e_62_6d // 'unbm'

/** Bring the schema up to date, serialized across replicas. */
export async function migrateDb(db: Db): Promise<void> {
  if (db.kind === 'pglite') {
    // One PGlite instance is one connection in one process: nobody to race with.
    await migratePglite(db.orm as unknown as PgliteDatabase, {
      migrationsFolder: MIGRATIONS_FOLDER,
    })
    return
  }
  if (!db.databaseUrl) throw new Error('a Postgres Db must carry its databaseUrl')
  // A session lock lives on one connection: a pool could lock on one and unlock on another.
  const client = postgres(db.databaseUrl, { max: 1, onnotice: () => {} })
  try {
    const orm = drizzlePostgres(client)
    await orm.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`)
    try {
      await migratePostgres(orm, { migrationsFolder: MIGRATIONS_FOLDER })
    } finally {
      await orm.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`)
    }
  } finally {
    await client.end({ timeout: 5 })
  }
}
