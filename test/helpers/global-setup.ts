import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { randomBytes } from 'node:crypto'
import { natsUrl, runPrefix, TEST_RUN_ENV } from './nats.ts'
import { makePgTemplate, PG_TEMPLATE_ENV } from './pg-template.ts'

/**
 * Once per `npm test`: afterwards, delete the KV and Object Store buckets this run made on the shared NATS server,
 * including those of service processes a test killed with SIGKILL, which never close their own.
 * Every test prefix of this run starts `t_<run id>_` (see `uniquePrefix`), so another run on the
 * same server, before or at the same time, keeps its own.
 */
let pgTemplate: { remove(): void } | undefined

export async function setup(): Promise<void> {
  // Set before vitest forks its workers, which inherit it (and pass it on to what they spawn).
  process.env[TEST_RUN_ENV] = randomBytes(4).toString('hex')
  const template = await makePgTemplate()
  pgTemplate = template
  process.env[PG_TEMPLATE_ENV] = template.dir
}

export async function teardown(): Promise<void> {
  pgTemplate?.remove()
  let nc
  try {
    nc = await connect({ servers: natsUrl(), name: 'test-run cleanup' })
  } catch {
    return // no NATS here: nothing of ours can be on it
  }
  try {
    const jsm = await jetstreamManager(nc)
    const ours: string[] = []
    for await (const info of jsm.streams.list()) {
      const name = info.config.name
      if (name.startsWith(`KV_${runPrefix()}`) || name.startsWith(`OBJ_${runPrefix()}`))
        ours.push(name)
    }
    await Promise.all(ours.map((name) => jsm.streams.delete(name)))
  } finally {
    await nc.close()
  }
}
