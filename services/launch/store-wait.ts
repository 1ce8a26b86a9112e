import type { Config } from '../common/config.ts'
import { ConfigError, UbError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import type { InstanceInfo } from '../contracts/store.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { AdminToken } from './admin-token.ts'

const STORE_WAIT_MS = 30_000 // a service started before the store waits this long for it

const retriable = (err: unknown) =>
  err instanceof UbError && ['no_responders', 'bus_timeout'].includes(err.code)

/**
 * Wait for the binding store to answer on the bus, then read the instance. The store keeps the
 * operator token's hash too, and the configured token is the operator's latest word, so it
 * replaces the hash kept there; a hash that differed means the fabric's processes were given
 * different tokens (or the token is being rotated), which the log says. No store within 30 s is
 * one line naming where this process looked for it.
 */
export async function joinInstance(
  store: StoreClient,
  log: Logger,
  admin: AdminToken,
  config: Config
): Promise<InstanceInfo> {
  const deadline = Date.now() + STORE_WAIT_MS
  for (let attempt = 0; ; attempt++) {
    try {
      const { ok } = await store.call('instance.verifyAdminToken', { token: admin.token })
      if (!ok) {
        log.warn(
          { key: 'adminToken' },
          "the instance kept another admin token's hash, now replaced by this one: every process of the fabric must be given the same adminToken (to rotate it, restart them all with the new one)"
        )
      }
      return await store.call('instance.get', { adminToken: admin.token })
    } catch (err) {
      if (!retriable(err)) throw err
      if (Date.now() > deadline) throw noStore(config)
      if (attempt === 0) log.info('waiting for the binding store to answer on the bus')
      await new Promise((r) => setTimeout(r, Math.min(1_000, 100 * 2 ** attempt)))
    }
  }
}

function noStore(config: Config): ConfigError {
  return new ConfigError(
    'busPrefix',
    `'${config.busPrefix}': no binding store answered on the bus within ${STORE_WAIT_MS / 1_000} s; start one (--services store) on the same natsUrl and busPrefix`
  )
}
