import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../common/config.ts'
import { ConfigError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'

export interface SecretKeys {
  current: string
  retired: string[]
  /** The data folder's key file, when the key came from there. */
  file: string | null
}

/**
 * The key the store seals upstream secrets and TLS keys with (services/store/sealed.ts): from
 * config (`secretKey`, UB_SECRET_KEY) when given; else, on PGlite, the data folder's
 * `secret-key` file (mode 0600, next to `admin-token`), made at first start. On Postgres it must
 * be configured: store replicas sharing the database could not share a key made in one process's
 * folder, and storing secrets in the clear is not a default we offer.
 */
export function resolveSecretKeys(config: Config, log: Logger): SecretKeys {
  const retired = config.secretKeysRetired
  if (config.secretKey) return { current: config.secretKey, retired, file: null }
  if (config.databaseUrl) {
    throw new ConfigError(
      'secretKey',
      'must be set when the store runs on Postgres (32 random bytes, base64; the same on every store replica), e.g. `openssl rand -base64 32`'
    )
  }
  const file = join(config.dataDir, 'secret-key')
  try {
    const current = readFileSync(file, 'utf8').trim()
    chmodSync(file, 0o600) // a file copied in by hand may be readable by others
    if (current) return { current, retired, file }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfigError('secretKey', `key file ${file} cannot be read`, { cause: err })
    }
  }
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
  const current = randomBytes(32).toString('base64')
  writeFileSync(file, current + '\n', { mode: 0o600, flag: 'wx' })
  log.info({ file }, 'made the key that seals upstream secrets at rest; back it up with the data')
  return { current, retired, file }
}
