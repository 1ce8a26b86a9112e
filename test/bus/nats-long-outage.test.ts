import { afterEach, expect, it } from 'vitest'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { sleep } from '../helpers/gateway.ts'
import { startNatsServer, uniquePrefix } from '../helpers/nats.ts'

const closers: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {})
})

/**
 * NATS.js gives up reconnecting after 10 attempts 2 s apart by default: every service whose NATS
 * servers were all away for more than ~20 s (a cluster restart, a partition) kept a closed bus
 * for good and never recovered without a restart. The bus now dials until it is closed.
 */
it('comes back after every NATS server was away for longer than 20 s', async () => {
  let server = await startNatsServer()
  const port = server.port
  closers.push(() => server.stop())
  const bus = await connectNatsBus({ servers: server.url, prefix: uniquePrefix('outage') })
  closers.push(() => bus.close())
  await bus.flush()
  await server.stop('SIGKILL')
  await sleep(26_000) // past NATS.js's 10 attempts × 2 s
  server = await startNatsServer({ port })
  let answered = false
  for (const deadline = Date.now() + 15_000; !answered && Date.now() < deadline;) {
    answered = await Promise.race([
      bus.flush().then(
        () => true,
        () => false
      ),
      sleep(1_000).then(() => false),
    ])
    if (!answered) await sleep(250)
  }
  expect(answered, 'the bus answers again').toBe(true)
}, 60_000)
