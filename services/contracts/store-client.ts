import { randomBytes } from 'node:crypto'
import type { Bus } from '../common/bus/bus.ts'
import { requestJson } from '../common/bus/rpc.ts'
import { UbError } from '../common/errors.ts'
import { storeSubject, type StoreApi, type StoreVerb } from './store.ts'

export interface StoreClient {
  call<V extends StoreVerb>(verb: V, input: StoreApi[V]['in']): Promise<StoreApi[V]['out']>
}

/** Answers after which the same call may go to another replica: it died, hung, or lost its database. */
const RETRYABLE = new Set(['bus_timeout', 'no_responders', 'storage_unavailable'])
/**
 * Writes that make a log row: each call carries a key of its own, so a retry of one the first
 * replica committed before it died gets that row back, not a second (`transitions.request_key`).
 * The other writes are idempotent already (`upstream.patch` sets fields, `request.create` is one
 * request per secret, `instance.get` creates the instance once, `te.entity.*` set or remove
 * values).
 */
const KEYED: ReadonlySet<StoreVerb> = new Set<StoreVerb>([
  'event',
  'upstream.create',
  'upstream.edit',
])
export const DEFAULT_STORE_RETRIES = 2
const RETRY_PAUSE_MS = 250 // times the attempt number: a restarting replica or database gets a moment

/**
 * A typed client of the binding store over the bus. Errors keep the store's codes. A call that
 * timed out, found no store, or hit an unavailable database is tried again `retries` times (the
 * queue group may pick another replica), writes with the same request key.
 */
export function createStoreClient({
  bus,
  timeoutMs = 5_000,
  retries = DEFAULT_STORE_RETRIES,
}: {
  bus: Bus
  timeoutMs?: number
  retries?: number
}): StoreClient {
  return {
    async call(verb, input) {
      const keyed = KEYED.has(verb) && !(input as { requestKey?: string }).requestKey
      const body = keyed ? { ...input, requestKey: randomBytes(12).toString('base64url') } : input
      for (let attempt = 0; ; attempt++) {
        try {
          const sent = attempt > 0 && KEYED.has(verb) ? { ...body, retry: true } : body
          return await requestJson(bus, storeSubject(verb), sent, timeoutMs)
        } catch (err) {
          if (attempt >= retries || !(err instanceof UbError) || !RETRYABLE.has(err.code)) throw err
          await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS * (attempt + 1)))
        }
      }
    },
  }
}
