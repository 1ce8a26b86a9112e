import { silentLogger } from '../../services/common/log.ts'
import type { Binding } from '../../machines/index.ts'
import type { CreateBridgeLinkOptions } from '../../services/supervisor/bridge.ts'
import type { TestBroker } from './aedes.ts'

/**
 * The options of link UP1 from a local broker to a remote one, as the supervisor's link tests
 * build it: its client IDs, its credentials, `bindings` and a forwarding `window` of `window`.
 */
export const linkOptions = (
  local: Pick<TestBroker, 'url'>,
  remote: Pick<TestBroker, 'port'>,
  bindings: readonly Binding[],
  window: number
): CreateBridgeLinkOptions => ({
  upstreamId: 'UP1',
  target: { host: 'mqtt://127.0.0.1', brokerPort: remote.port },
  bindings,
  credentials: async () => ({ username: 'UB_test', password: 'secret' }),
  local: { url: local.url },
  localClientId: 'ubb-UP1',
  upstreamClientId: 'UB_test-UP1',
  window,
  log: silentLogger(),
})
