import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'
import { mqtt311Contract } from './mqtt311.contract.ts'

// The embedded default: one gateway on the in-process bus, with the same mq and persistence code.
mqtt311Contract('a single gateway (in-process bus)', async () => {
  const bus = createInProcessBus({ prefix: uniquePrefix('gw1') })
  const gw = await startTestGateway({ bus })
  return {
    a: gw,
    b: gw,
    async close() {
      await gw.close()
      await bus.close()
    },
  }
})

// Two gateways, each with its own NATS connection on one prefix, as two processes would have.
mqtt311Contract('a cluster of two gateways (NATS)', async () => {
  const prefix = uniquePrefix('gw2')
  const busA = await createTestNatsBus({ prefix })
  const busB = await createTestNatsBus({ prefix })
  const a = await startTestGateway({ bus: busA, gatewayId: 'a' })
  const b = await startTestGateway({ bus: busB, gatewayId: 'b' })
  return {
    a,
    b,
    async close() {
      await Promise.all([a.close(), b.close()])
      await busB.close()
      await busA.close()
    },
  }
})
