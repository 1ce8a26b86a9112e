import { createMemoryBus, createMemoryHub } from '../../services/common/bus/memory.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { busContract } from './bus.contract.ts'

// One hub per file: buses with different prefixes share it, as they would share a NATS server.
const hub = createMemoryHub()

busContract('memory', async ({ prefix = uniquePrefix('mem') } = {}) =>
  createMemoryBus({ prefix, hub })
)
