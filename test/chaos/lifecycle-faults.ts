import type { Fault, FaultContext, FaultOutcome } from './faults.ts'
import { startLifecycle, type Lifecycle } from './lifecycle.ts'
import { sleep, until } from './wait.ts'

/** The lanes run this long before the fault, so it strikes calls in flight. */
const LIFECYCLE_LEAD_MS = 1_000
const TERMINATE_EVERY_MS = 200

/**
 * A fault of the store's side (its database or a replica) while the counted bridge carries
 * traffic and other upstreams go through their lifecycle over the operator API.
 */
function duringLifecycle(
  name: string,
  strike: (ctx: FaultContext, lifecycle: Lifecycle) => Promise<void>
): Fault {
  return {
    name,
    async inject(ctx): Promise<FaultOutcome> {
      const lifecycle = startLifecycle(ctx.fabric, ctx.note)
      let failure: unknown
      try {
        await sleep(LIFECYCLE_LEAD_MS)
        await until(() => lifecycle.inFlight > 0, {
          timeoutMs: 5_000,
          everyMs: 5,
          what: 'a lifecycle call in flight',
        }).catch(() => ctx.note('no lifecycle call in flight when the fault struck'))
        lifecycle.faultStarted()
        await strike(ctx, lifecycle)
      } catch (err) {
        failure = err
      }
      // The lanes are stopped and their logs checked whether or not the fault went as planned.
      lifecycle.faultHealed()
      const healedAt = Date.now()
      const report = await lifecycle.finish()
      ctx.note(`lifecycle lanes done, ${report.logsChecked} logs checked`)
      if (failure) throw failure
      return { healedAt, lifecycle: report }
    },
  }
}

/** The fabric's Postgres stopped (fast: every connection cut), down `downMs`, started again. */
const postgresRestart = duringLifecycle(
  'postgres-restart',
  async ({ fabric, downMs, note }, lifecycle) => {
    note(`pg_ctl stop -m fast, ${lifecycle.inFlight} lifecycle calls in flight`)
    await fabric.postgres.stop()
    await sleep(downMs)
    await fabric.postgres.start()
    note('Postgres started again')
  }
)

/** Every connection to the fabric's database terminated, every 200 ms for `downMs`. */
const pgTerminate = duringLifecycle('pg-terminate', async ({ fabric, downMs, note }, lifecycle) => {
  note(`terminating every connection, ${lifecycle.inFlight} lifecycle calls in flight`)
  const endAt = Date.now() + downMs
  let rounds = 0
  let terminated = 0
  while (Date.now() < endAt) {
    terminated += await fabric.postgres.terminateBackends(fabric.database)
    rounds++
    await sleep(TERMINATE_EVERY_MS)
  }
  note(`pg_terminate_backend: ${terminated} connections in ${rounds} rounds`)
})

/** SIGKILL one store replica with lifecycle calls in flight; started again after `downMs`. */
const storeKill = duringLifecycle('store-kill', async ({ fabric, downMs, note }, lifecycle) => {
  const store = fabric.of('store')[0]!
  note(`SIGKILL ${store.label} (pid ${store.pid}), ${lifecycle.inFlight} lifecycle calls in flight`)
  await store.kill()
  await sleep(downMs)
  await store.start()
  note(`${store.label} back (pid ${store.pid})`)
})

export const LIFECYCLE_FAULTS: Fault[] = [postgresRestart, pgTerminate, storeKill]
