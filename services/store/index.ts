import type { Db } from '../../db/client.ts'
import type { Bus } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import type { InstanceInfo } from '../contracts/store.ts'
import { createHandlers, serveHandlers } from './handlers.ts'
import { ensureInstance } from './instance.ts'
import type { StoreHooks } from './repo.ts'
import { sealRows } from './seal-rows.ts'
import { keyringOf, parseKeyring, useKeyring } from './sealed.ts'

export * from '../contracts/store.ts'
export { createStoreClient, type StoreClient } from '../contracts/store-client.ts'
export type { StoreHooks } from './repo.ts'

export interface StoreOptions {
  bus: Bus
  /** Migrated already (`migrateDb`): the launcher decides when the schema changes. */
  db: Db
  log: Logger
  /** Operator token from config; see `ensureInstance` for what happens without one. */
  adminToken?: string
  /** Test seam for failure injection inside a transaction. */
  hooks?: StoreHooks
  /**
   * Keys sealing upstream secrets and TLS keys at rest (sealed.ts): `secretKey`, and the retired
   * ones that still open older values. Without them values are written in the clear.
   */
  secretKeys?: { current: string; retired?: readonly string[] }
}

export interface Store {
  /** This instance; `adminToken` only when this start created it with a generated token. */
  readonly instance: InstanceInfo
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Start the binding store: the only Postgres writer, serving its API on the bus. */
export async function startStore({
  bus,
  db,
  log,
  adminToken,
  hooks,
  secretKeys,
}: StoreOptions): Promise<Store> {
  useKeyring(db, secretKeys && parseKeyring(secretKeys.current, secretKeys.retired))
  await sealRows(db, keyringOf(db), log)
  const instance = await ensureInstance(db, adminToken === undefined ? {} : { adminToken })
  const deps = hooks ? { bus, db, log, hooks } : { bus, db, log }
  const { subs, drain } = await serveHandlers(deps, createHandlers(deps))
  log.info({ instanceId: instance.instanceId, db: db.kind }, 'binding store serving')
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= (async () => {
      // Stop taking requests; the db belongs to whoever created it.
      await Promise.allSettled(subs.map((s) => s.unsubscribe()))
      await drain()
    })())
  return { instance, close, [Symbol.asyncDispose]: close }
}
