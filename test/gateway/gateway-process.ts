/**
 * One gateway in its own process, for tests that SIGKILL it: a NATS bus under UB_BUS_PREFIX,
 * port 0, and one JSON line `{"port":…,"brokerId":…}` on stdout once it listens.
 */
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'
import { createGateway } from '../../services/gateway/index.ts'

const HEARTBEAT_MS = 500 // tests wait for a dead gateway's wills: 3–7 beats

async function main(): Promise<void> {
  const bus = await connectNatsBus({
    servers: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
    prefix: process.env.UB_BUS_PREFIX ?? 'ub',
  })
  const gateway = await createGateway({
    bus,
    store: createStoreClient({ bus }),
    log: silentLogger(),
    host: '127.0.0.1',
    mqttPort: 0,
    heartbeatMs: HEARTBEAT_MS,
    gatewayId: process.env.UB_GATEWAY_ID ?? 'gw',
  })
  process.stdout.write(
    JSON.stringify({ port: gateway.ports.mqtt, brokerId: gateway.brokerId }) + '\n'
  )
  process.once('SIGTERM', () => {
    void gateway
      .close()
      .then(() => bus.close())
      .then(() => process.exit(0))
  })
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
