import type { Bus } from '../common/bus/bus.ts'
import { requestJson } from '../common/bus/rpc.ts'
import { storeSubject, type StoreApi, type StoreVerb } from './store.ts'

export interface StoreClient {
  call<V extends StoreVerb>(verb: V, input: StoreApi[V]['in']): Promise<StoreApi[V]['out']>
}

/** A typed client of the binding store over the bus. Errors keep the store's codes. */
export function createStoreClient({
  bus,
  timeoutMs = 5_000,
}: {
  bus: Bus
  timeoutMs?: number
}): StoreClient {
  return {
    call: (verb, input) => requestJson(bus, storeSubject(verb), input, timeoutMs),
  }
}
