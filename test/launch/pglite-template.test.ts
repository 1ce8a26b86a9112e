import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { afterEach, describe, expect, it } from 'vitest'
import { createDb } from '../../db/client.ts'
import { migrateDb, MIGRATIONS_FOLDER } from '../../db/migrate.ts'
import { seedPgliteDir } from '../../db/pglite-template.ts'

/** A first start copies a migrated PGlite database (db/pglite-template.ts) into an empty folder. */
describe('the PGlite template a first start copies', () => {
  let dir = ''
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  it('gives an empty folder every migration, and never replaces a database already there', async () => {
    dir = mkdtempSync(join(tmpdir(), 'ub-pglite-seed-'))
    // What a copy cut short by a crash leaves: removed, not left to pile up.
    mkdirSync(join(dir, 'pg.seeding-1'))
    writeFileSync(join(dir, 'pg.seeding-1', 'PG_VERSION'), '17')
    expect(await seedPgliteDir(dir)).toBe(true)
    expect(readdirSync(dir)).toEqual(['pg'])
    const journal = JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, 'meta/_journal.json'), 'utf8'))
    const db = createDb({ dataDir: dir })
    try {
      const [applied] = await db.execute<{ n: number }>(
        sql`select count(*)::int as n from drizzle.__drizzle_migrations`
      )
      expect(applied!.n).toBe(journal.entries.length)
      await migrateDb(db) // nothing left to apply
      await db.execute(sql`create table kept (id int)`)
      await db.execute(sql`insert into kept values (7)`)
    } finally {
      await db.close()
    }

    expect(await seedPgliteDir(dir)).toBe(false)
    const again = createDb({ dataDir: dir })
    try {
      expect(await again.execute(sql`select id from kept`)).toEqual([{ id: 7 }])
    } finally {
      await again.close()
    }
  })
})
