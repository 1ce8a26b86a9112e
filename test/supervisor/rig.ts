import type { Bus } from '../../services/common/bus/bus.ts'
import { startAedes, type TestBroker } from './aedes.ts'
import { startFakeStore, type FakeStore } from './fake-store.ts'

/**
 * What most supervisor tests bridge between: a local and a remote aedes and a fake store on
 * `bus`. Each (and `bus`) is closed by `cleanups`, which the test runs in reverse.
 */
export async function startRig(
  bus: Bus,
  cleanups: Array<() => Promise<unknown>>
): Promise<{ local: TestBroker; remote: TestBroker; store: FakeStore }> {
  const local = await startAedes()
  const remote = await startAedes()
  const store = await startFakeStore(bus)
  cleanups.push(
    () => bus.close(),
    () => local.close(),
    () => remote.close(),
    () => store.close()
  )
  return { local, remote, store }
}
