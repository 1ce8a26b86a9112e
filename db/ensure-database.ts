import postgres from 'postgres'

const CONNECT_TIMEOUT_S = 10 // a wrong host should fail a start, not hang it for postgres.js's 30 s
const UNDEFINED_DATABASE = '3D000'
const DUPLICATE_DATABASE = '42P04'

const open = (databaseUrl: string, database?: string) =>
  postgres(databaseUrl, {
    max: 1,
    connect_timeout: CONNECT_TIMEOUT_S,
    onnotice: () => {},
    ...(database === undefined ? {} : { database }),
  })

/** A name as a Postgres identifier: double-quoted, inner double quotes doubled. */
export function quoteIdentifier(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"'
}

/** Open one connection to the database a URL names and close it: its errors are postgres.js's. */
export async function checkDatabase(databaseUrl: string): Promise<void> {
  const sql = open(databaseUrl)
  try {
    await sql`select 1`
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/**
 * Create the database a URL names when it does not exist yet, from the server's maintenance
 * database (`postgres`; `template1` when the target is `postgres` itself). Another migrator
 * creating it at the same moment is fine. Resolves to the database's name and whether it was made.
 */
export async function ensureDatabase(
  databaseUrl: string
): Promise<{ database: string; created: boolean }> {
  const target = open(databaseUrl)
  // postgres.js's own reading of the URL (path, query, PGDATABASE, user name), so we create the
  // database it will connect to.
  const database = target.options.database
  try {
    await target`select 1`
    return { database, created: false }
  } catch (err) {
    if ((err as { code?: unknown }).code !== UNDEFINED_DATABASE) throw err
  } finally {
    await target.end({ timeout: 5 })
  }
  const maintenance = open(databaseUrl, database === 'postgres' ? 'template1' : 'postgres')
  try {
    await maintenance.unsafe(`create database ${quoteIdentifier(database)}`)
    return { database, created: true }
  } catch (err) {
    if ((err as { code?: unknown }).code === DUPLICATE_DATABASE) return { database, created: false }
    throw err
  } finally {
    await maintenance.end({ timeout: 5 })
  }
}
