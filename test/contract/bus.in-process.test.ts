import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { busContract } from './bus.contract.ts'

// One hub per file: buses with different prefixes share it, as they would share a NATS server.
const hub = createInProcessHub()

busContract('in-process', async ({ prefix = uniquePrefix('mem') } = {}) =>
  createInProcessBus({ prefix, hub })
)
