/**
 * One gateway as `uns-bridge start` runs it (in-process bus, journal on disk), in its own
 * process so the measuring clients do not share its event loop, as they do not share
 * Mosquitto's. Prints `{"port":…}` once it listens; SIGTERM closes it.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'
import { createGateway } from '../../services/gateway/index.ts'

const dataDir = mkdtempSync(join(tmpdir(), 'ub-iso-'))
const bus = createInProcessBus({ dataDir })
const gateway = await createGateway({
  bus,
  store: createStoreClient({ bus }),
  log: silentLogger(),
  host: '127.0.0.1',
  mqttPort: 0,
})
process.stdout.write(JSON.stringify({ port: gateway.ports.mqtt }) + '\n')
process.once('SIGTERM', () => {
  void gateway
    .close()
    .then(() => bus.close())
    .finally(() => {
      rmSync(dataDir, { recursive: true, force: true })
      process.exit(0)
    })
})
