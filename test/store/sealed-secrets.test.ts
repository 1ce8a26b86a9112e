import { randomBytes } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import type { DbKind } from '../../db/client.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { UbError } from '../../services/common/errors.ts'
import {
  createStoreClient,
  startStore,
  type EventActor,
  type Store,
  type StoreClient,
} from '../../services/store/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { uniquePrefix } from '../helpers/nats.ts'

const operator: EventActor = { kind: 'operator', id: 'admin' }
const key = () => randomBytes(32).toString('base64')
const PEM_KEY =
  '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPrivatePartOfTheKey\n-----END PRIVATE KEY-----\n'
const PEM_CERT = '-----BEGIN CERTIFICATE-----\nMIIBPublicPart\n-----END CERTIFICATE-----\n'

/** Upstream secrets and client TLS keys sealed at rest, on PGlite and on real Postgres. */
describe.each<DbKind>(['pglite', 'postgres'])('secrets at rest on %s', (kind) => {
  const open: Array<{ close(): Promise<void> }> = []
  afterEach(async () => {
    for (const o of open.splice(0).reverse()) await o.close()
  })

  /** A store on `t` with `secretKeys`, and the error lines it logged. */
  async function storeOn(t: TestDb, secretKeys?: { current: string; retired?: string[] }) {
    const errors: string[] = []
    const log = pino({ level: 'error' }, { write: (line: string) => void errors.push(line) })
    const bus: Bus = createInProcessBus({ prefix: uniquePrefix('seal') })
    const store: Store = await startStore({
      bus,
      db: t.db,
      log,
      ...(secretKeys ? { secretKeys } : {}),
    })
    const client: StoreClient = createStoreClient({ bus })
    const handle = {
      client,
      errors,
      async close() {
        await store.close()
        await bus.close()
      },
    }
    open.push(handle)
    return handle
  }
  const database = async () => {
    const t = await createTestDb(kind)
    open.push(t)
    return t
  }
  const create = (client: StoreClient, secret: string, tls?: object) =>
    client.call('upstream.create', {
      host: 'mqtts://broker.example',
      brokerPort: 8883,
      httpPort: 443,
      secret,
      ...(tls ? { tls } : {}),
      actor: operator,
    })
  const raw = async (t: TestDb, id: string) => {
    const [row] = await t.db.execute<{
      secret: string | null
      tls: { key?: string; cert?: string } | null
    }>(sql`select secret, tls from upstreams where id = ${id}`)
    return row!
  }
  const failure = (p: Promise<unknown>) =>
    p.then(
      () => {
        throw new Error('expected a failure')
      },
      (err: unknown) => err as UbError
    )

  it('keeps no plaintext in the row and reads it back', async () => {
    const t = await database()
    const { client } = await storeOn(t, { current: key() })
    const secret = randomBytes(32).toString('base64url')
    const up = await create(client, secret, { key: PEM_KEY, cert: PEM_CERT })
    const row = await raw(t, up.id)
    expect(row.secret).toMatch(/^ubs1:1:[A-Za-z0-9_-]+$/)
    expect(row.secret).not.toContain(secret)
    expect(row.tls!.key).toMatch(/^ubs1:1:/)
    expect(JSON.stringify(row.tls)).not.toContain('PrivatePartOfTheKey')
    expect(row.tls!.cert).toBe(PEM_CERT) // public: kept as it is
    // A fresh nonce per value: the same secret seals differently on another row.
    const twin = await create(client, secret)
    expect((await raw(t, twin.id)).secret).not.toBe(row.secret)

    expect(await client.call('upstream.credentials', { id: up.id })).toMatchObject({
      password: secret,
    })
    expect((await client.call('upstream.get', { id: up.id })).tls).toEqual({
      key: PEM_KEY,
      cert: PEM_CERT,
    })
  })

  it('a wrong key fails clearly, naming secretKey, at start and on every read', async () => {
    const t = await database()
    const first = await storeOn(t, { current: key() })
    const up = await create(first.client, 'the-secret', { key: PEM_KEY })
    await first.close()
    open.splice(open.indexOf(first), 1)

    const wrong = await storeOn(t, { current: key() })
    expect(wrong.errors.join('\n')).toContain(up.id)
    expect(wrong.errors.join('\n')).toMatch(/does not open with key number 1 of secretKey/)
    const err = await failure(wrong.client.call('upstream.credentials', { id: up.id }))
    expect(err).toBeInstanceOf(UbError)
    expect(err.code).toBe('storage_unavailable')
    expect(err.message).toMatch(/secretKey \(UB_SECRET_KEY\)/)
    expect((await failure(wrong.client.call('upstream.get', { id: up.id }))).code).toBe(
      'storage_unavailable'
    )
    // The row was left as it was: the right key still opens it.
    expect((await raw(t, up.id)).secret).toMatch(/^ubs1:1:/)
  })

  it('a sealed value copied to another row does not open there', async () => {
    const t = await database()
    const { client } = await storeOn(t, { current: key() })
    const a = await create(client, 'secret-of-a')
    const b = await create(client, 'secret-of-b')
    await t.db.execute(
      sql`update upstreams set secret = (select secret from upstreams where id = ${a.id}) where id = ${b.id}`
    )
    const err = await failure(client.call('upstream.credentials', { id: b.id }))
    expect(err.code).toBe('storage_unavailable')
    expect(err.message).toMatch(/copied from another row/)
    expect((await client.call('upstream.credentials', { id: a.id })).password).toBe('secret-of-a')
  })

  it('seals rows an older version left in the clear, and reseals on key rotation', async () => {
    const t = await database()
    const before = await storeOn(t) // no key: as the older version wrote
    const up = await create(before.client, 'plain-secret', { key: PEM_KEY })
    expect((await raw(t, up.id)).secret).toBe('plain-secret')
    await before.close()
    open.splice(open.indexOf(before), 1)

    const oldKey = key()
    const sealed = await storeOn(t, { current: oldKey })
    expect((await raw(t, up.id)).secret).toMatch(/^ubs1:1:/)
    expect((await raw(t, up.id)).tls!.key).toMatch(/^ubs1:1:/)
    expect((await sealed.client.call('upstream.credentials', { id: up.id })).password).toBe(
      'plain-secret'
    )
    await sealed.close()
    open.splice(open.indexOf(sealed), 1)

    const rotated = await storeOn(t, { current: `2:${key()}`, retired: [oldKey] })
    expect(rotated.errors).toEqual([])
    expect((await raw(t, up.id)).secret).toMatch(/^ubs1:2:/)
    expect((await raw(t, up.id)).tls!.key).toMatch(/^ubs1:2:/)
    expect((await rotated.client.call('upstream.credentials', { id: up.id })).password).toBe(
      'plain-secret'
    )
    expect((await rotated.client.call('upstream.get', { id: up.id })).tls?.key).toBe(PEM_KEY)
  })
})
