import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import type { SQL } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import { postgresSocket, usesOwnSockets } from './pg-socket.ts'
import * as schema from './schema.ts'

export type DbKind = 'postgres' | 'pglite'
export type Schema = typeof schema
/** Both drivers' databases, typed as what they have in common. */
export type Orm = PgDatabase<PgQueryResultHKT, Schema>
/** Anything that runs SQL: the database or an open transaction. */
export type Executor = Pick<Orm, 'execute'>

export interface Db {
  readonly kind: DbKind
  readonly orm: Orm
  /** Set for Postgres: the migrator opens its own single connection to hold a session lock. */
  readonly databaseUrl?: string
  /** Raw SQL, rows as an array on both drivers (postgres.js returns one, PGlite `{ rows }`). */
  execute<T = Record<string, unknown>>(query: SQL, on?: Executor): Promise<T[]>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface CreateDbOptions {
  /** Postgres when set; PGlite in `${dataDir}/pg` otherwise. */
  databaseUrl?: string
  dataDir: string
  /** postgres.js pool size. */
  maxConnections?: number
}

const DEFAULT_MAX_CONNECTIONS = 10
const CONNECT_TIMEOUT_SEC = 10

/** Where PGlite keeps the database inside the data folder. */
export const pgliteDir = (dataDir: string) => join(dataDir, 'pg')

export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[]
  return ((result as { rows?: T[] }).rows ?? []) as T[]
}

/** One database handle over postgres.js (distributed) or PGlite (embedded), same schema and API. */
export function createDb({
  databaseUrl,
  dataDir,
  maxConnections = DEFAULT_MAX_CONNECTIONS,
}: CreateDbOptions): Db {
  let orm: Orm
  let end: () => Promise<void>
  let kind: DbKind
  if (databaseUrl) {
    const client = postgres(databaseUrl, {
      max: maxConnections,
      onnotice: () => {}, // "relation already exists, skipping" and friends are not news
      // A connection that does not come up in 10 s is given up (postgres.js waits 30): under
      // terminations a write queued on one waited 30 s, past every caller's deadline.
      connect_timeout: CONNECT_TIMEOUT_SEC,
      ...(usesOwnSockets(databaseUrl) ? { socket: postgresSocket } : {}),
    })
    orm = drizzlePostgres(client, { schema }) as unknown as Orm
    end = () => client.end({ timeout: 5 })
    kind = 'postgres'
  } else {
    const dir = pgliteDir(dataDir)
    mkdirSync(dir, { recursive: true })
    const client = new PGlite(dir)
    orm = drizzlePglite(client, { schema }) as unknown as Orm
    end = () => client.close()
    kind = 'pglite'
  }
  let closing: Promise<void> | undefined
  const close = () => (closing ??= end())
  return {
    kind,
    orm,
    ...(databaseUrl ? { databaseUrl } : {}),
    async execute<T>(query: SQL, on: Executor = orm) {
      return rowsOf<T>(await on.execute(query))
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}
