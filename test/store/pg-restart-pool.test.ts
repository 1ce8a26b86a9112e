import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { sql } from 'drizzle-orm'
import { afterEach, expect, it } from 'vitest'
import { createDb, type Db } from '../../db/client.ts'
import { TEST_POSTGRES_URL } from '../helpers/db.ts'

/**
 * A Postgres that is down refuses connections; one that comes back must be used again. Our
 * sockets (db/pg-socket.ts) rejected a refused connect, and postgres.js then never freed that
 * pool connection: once a restart had refused `max` connects, every later query waited forever,
 * and both store replicas answered nothing after the chaos run's postgres-restart.
 */
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A TCP forwarder to the test Postgres that can go away (connections refused) and come back. */
async function restartablePath(target: URL) {
  let server: Server | undefined
  const open = new Set<Socket>()
  const listen = (port: number) =>
    new Promise<number>((resolve) => {
      server = createServer((client) => {
        const upstream = connect(Number(target.port || 5432), target.hostname)
        for (const s of [client, upstream]) {
          open.add(s)
          s.on('error', () => {})
          s.once('close', () => open.delete(s))
        }
        client.pipe(upstream).pipe(client)
      })
      server.listen(port, '127.0.0.1', () => resolve((server!.address() as AddressInfo).port))
    })
  const port = await listen(0)
  const down = () => {
    server?.close()
    for (const s of open) s.destroy()
  }
  return { port, down, up: () => listen(port), close: down }
}

it('uses Postgres again once it is back, however many connects it refused meanwhile', async () => {
  const target = new URL(TEST_POSTGRES_URL)
  const path = await restartablePath(target)
  cleanups.push(path.close)
  const url = new URL(TEST_POSTGRES_URL)
  url.host = `127.0.0.1:${path.port}`
  const db: Db = createDb({ databaseUrl: url.toString(), dataDir: tmpdir(), maxConnections: 3 })
  cleanups.push(() => db.close())
  const one = () => db.execute<{ x: number }>(sql`select 1 as x`)
  expect(await one()).toEqual([{ x: 1 }])

  path.down()
  let refused = 0
  for (let i = 0; i < 5; i++) await one().catch(() => refused++)
  expect(refused).toBe(5)

  await path.up()
  const answer = await Promise.race([
    one(),
    new Promise((resolve) => setTimeout(() => resolve('no answer within 20 s'), 20_000)),
  ])
  expect(answer).toEqual([{ x: 1 }])
}, 40_000)
