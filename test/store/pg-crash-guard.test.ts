import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { connect, createServer, type AddressInfo } from 'node:net'
import { postgresSocket } from '../../db/pg-socket.ts'
import { isPostgresJsUnheldConnectionLoss } from '../../services/launch/runtime/pg-crash-guard.ts'
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
    // Which frame throws depends on timing: the write after the loss, or the socket close.
    expect(bare.stderr).toMatch(/nextWrite|CONNECTION_CLOSED/)
    const guarded = await child('guard')
    expect(guarded).toMatchObject({ code: 0, stdout: 'survived (rejected CONNECTION_CLOSED)\n' })
  })

  it("drops only postgres.js's own unheld connection losses, not one from anywhere else", () => {
    const stack = (message: string) =>
      `Error: ${message}\n` +
      '    at Socket.closed (file:///app/node_modules/postgres/src/connection.js:457:32)'
    const fromPostgresJs = (message: string, code: string) =>
      Object.assign(new Error(message), { code, stack: stack(message) })
    const elsewhere = Object.assign(new Error('write CONNECTION_CLOSED'), {
      code: 'CONNECTION_CLOSED',
      stack: 'Error: write CONNECTION_CLOSED\n    at ours (file:///app/services/store/repo.ts:1:1)',
    })
    // The server's goodbye when its backend is terminated (pg_terminate_backend): seen unheld.
    const terminated = fromPostgresJs(
      'terminating connection due to administrator command',
      '57P01'
    )
    expect(
      isPostgresJsUnheldConnectionLoss(
        fromPostgresJs('write CONNECTION_CLOSED', 'CONNECTION_CLOSED')
      )
    ).toBe(true)
    expect(isPostgresJsUnheldConnectionLoss(terminated)).toBe(true)
    expect(isPostgresJsUnheldConnectionLoss(fromPostgresJs('read ECONNRESET', 'ECONNRESET'))).toBe(
      true
    )
    expect(isPostgresJsUnheldConnectionLoss(fromPostgresJs('server closed', '08006'))).toBe(true)
    expect(isPostgresJsUnheldConnectionLoss(elsewhere)).toBe(false)
    // Not a connection loss: a query's own failure still ends the process when nobody held it.
    expect(isPostgresJsUnheldConnectionLoss(fromPostgresJs('duplicate key', '23505'))).toBe(false)
    expect(isPostgresJsUnheldConnectionLoss(fromPostgresJs('syntax error', '42601'))).toBe(false)
  })

  it('drops a raw socket error only when one of our Postgres sockets emitted it', async () => {
    // A server that resets every connection once it is up: the error has Node's frames only.
    const server = createServer((socket) => void setTimeout(() => socket.resetAndDestroy(), 50))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as AddressInfo).port
    try {
      const ours = await postgresSocket({ host: ['127.0.0.1'], port: [port] })
      const reset = await new Promise<Error>((resolve) => ours.once('error', resolve))
      expect((reset as NodeJS.ErrnoException).code).toBe('ECONNRESET')
      expect(isPostgresJsUnheldConnectionLoss(reset)).toBe(true)

      const stranger = connect(port, '127.0.0.1')
      const other = await new Promise<Error>((resolve) => stranger.once('error', resolve))
      expect((other as NodeJS.ErrnoException).code).toBe('ECONNRESET')
      expect(isPostgresJsUnheldConnectionLoss(other)).toBe(false)
    } finally {
      server.close()
    }
  })
})
