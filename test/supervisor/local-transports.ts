import { inProcessDialer } from '../../services/gateway/index.ts'
import type { SupervisorOptions } from '../../services/supervisor/index.ts'
import type { TestGateway } from '../helpers/gateway.ts'

/**
 * The two ways a link reaches its local gateway, for the contract suite: TCP (a supervisor in a
 * process of its own) and in process (the co-located link, beside the gateway). The tests that
 * exercise a link against a real gateway run the same assertions over both.
 */
export const LOCAL_TRANSPORTS = ['tcp', 'in-process'] as const
export type LocalTransport = (typeof LOCAL_TRANSPORTS)[number]

/** The supervisor options that point it at `gateway` over `transport`. */
export function localBroker(
  transport: LocalTransport,
  gateway: TestGateway
): Pick<SupervisorOptions, 'localBrokerUrl' | 'localDialer'> {
  return transport === 'tcp'
    ? { localBrokerUrl: gateway.url }
    : { localBrokerUrl: gateway.url, localDialer: inProcessDialer(gateway) }
}
