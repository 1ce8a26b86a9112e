import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { isPostgresJsUnheldConnectionClosed } from '../../services/launch/runtime/pg-crash-guard.ts'
import { TEST_POSTGRES_URL } from '../helpers/db.ts'

const run = promisify(execFile)
const ROOT = new URL('../..', import.meta.url).pathname
const child = (mode: 'guard' | 'none') =>
  run(
    process.execPath,
    ['--import', 'tsx', 'test/store/fixtures/pg-dead-socket.ts', TEST_POSTGRES_URL, mode],
    { cwd: ROOT, timeout: 30_000 }
  ).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => e
  )

describe('a Postgres backend killed under a transaction (porsager/postgres#1208)', () => {
  // When postgres.js ships the fix (#1209), the first half fails: drop the guard then.
  it('crashes a bare postgres.js process, and not one with the guard the CLI installs', async () => {
    const bare = await child('none')
    expect(bare.code).not.toBe(0)
    expect(bare.stderr).toMatch(/nextWrite/)
    const guarded = await child('guard')
    expect(guarded).toMatchObject({ code: 0, stdout: 'survived (rejected CONNECTION_CLOSED)\n' })
  })

  it("drops only postgres.js's own unheld CONNECTION_CLOSED, not one from anywhere else", () => {
    const fromPostgresJs = Object.assign(new Error('write CONNECTION_CLOSED 127.0.0.1:5432'), {
      code: 'CONNECTION_CLOSED',
      stack:
        'Error: write CONNECTION_CLOSED 127.0.0.1:5432\n' +
        '    at Socket.closed (file:///app/node_modules/postgres/src/connection.js:457:32)',
    })
    const elsewhere = Object.assign(new Error('write CONNECTION_CLOSED'), {
      code: 'CONNECTION_CLOSED',
      stack: 'Error: write CONNECTION_CLOSED\n    at ours (file:///app/services/store/repo.ts:1:1)',
    })
    const otherCode = Object.assign(new Error('boom'), {
      code: 'ECONNRESET',
      stack: fromPostgresJs.stack,
    })
    expect(isPostgresJsUnheldConnectionClosed(fromPostgresJs)).toBe(true)
    expect(isPostgresJsUnheldConnectionClosed(elsewhere)).toBe(false)
    expect(isPostgresJsUnheldConnectionClosed(otherCode)).toBe(false)
  })
})
