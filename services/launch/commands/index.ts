import { registerCluster } from './cluster.ts'
import { processIo, type Io } from './io.ts'
import { registerObserve } from './observe.ts'
import { OPERATOR_COMMANDS, runOperator } from './program.ts'
import { registerRequests } from './requests.ts'
import { registerRoute } from './route.ts'
import { registerStatus } from './status.ts'
import { registerUpstreams } from './upstreams.ts'

export { OPERATOR_COMMANDS }
export type { Io }

const GROUPS = [
  registerUpstreams,
  registerRequests,
  registerObserve,
  registerStatus,
  registerRoute,
  registerCluster,
]

/**
 * `uns-bridge <operator command> …` over the HTTP API; argv starts with the command's name.
 * Resolves to the exit code. `io` defaults to this process's stdout, stderr and environment.
 */
export function operatorCommand(argv: readonly string[], io: Io = processIo()): Promise<number> {
  return runOperator(argv, io, GROUPS)
}
