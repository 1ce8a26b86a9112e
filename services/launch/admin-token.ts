import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Config } from '../common/config.ts'
import { sha256Hex } from '../common/digest.ts'
import { ConfigError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'

export interface AdminToken {
  /** The plaintext token, known to this process only to print it; never stored in the database. */
  token: string
  hash: string
  /** True when this start made it: the only time it is printed in full. */
  created: boolean
  /** The data folder's token file, when the token came from there; null when configured. */
  file: string | null
}

export const hashToken = sha256Hex

/**
 * The one operator token of this process, which every token check in it accepts and nothing
 * else (the handshake API's operator routes, `/metrics` of every process):
 * - configured (`adminToken`, UB_ADMIN_TOKEN): that one, on any bus;
 * - on NATS without one: refused, because processes that share a bus must share a token and
 *   none of them can make it for the others (the operator gives every process the same one);
 * - otherwise (the in-process bus: all services in this one process): the data folder's
 *   `admin-token` file (mode 0600, like k3s's node-token), made at first start (written by
 *   `keepMadeToken` once the start succeeded) and printed then.
 */
export function operatorToken(config: Config, log: Logger): AdminToken {
  if (config.adminToken) {
    warnAboutUnusedFile(config.dataDir, config.adminToken, log)
    return {
      token: config.adminToken,
      hash: hashToken(config.adminToken),
      created: false,
      file: null,
    }
  }
  if (config.natsUrl) {
    throw new ConfigError(
      'adminToken',
      'must be set on every process of a fabric on NATS (natsUrl is set): give each process the same token as UB_ADMIN_TOKEN (at least 16 characters, e.g. `openssl rand -base64 32`); every process accepts that token and no other'
    )
  }
  return tokenFile(config.dataDir)
}

function readTokenFile(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim() || null
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    return null
  }
}

function tokenFile(dataDir: string): AdminToken {
  const file = join(dataDir, 'admin-token')
  const kept = readTokenFile(file)
  if (kept) return { token: kept, hash: hashToken(kept), created: false, file }
  const token = 'ubt_' + randomBytes(24).toString('base64url')
  return { token, hash: hashToken(token), created: true, file }
}

/**
 * Write a token made by this start to its file, once the start succeeded: a first start that
 * fails (a taken port, a bad setting) leaves no token behind that was never printed, and the
 * next start makes and prints one.
 */
export function keepMadeToken(admin: AdminToken): void {
  if (!admin.created || !admin.file) return
  mkdirSync(dirname(admin.file), { recursive: true, mode: 0o700 })
  writeFileSync(admin.file, admin.token + '\n', { mode: 0o600, flag: 'wx' })
}

/** A token made at an earlier start stops working once one is configured: say so, once, at start. */
function warnAboutUnusedFile(dataDir: string, configured: string, log: Logger): void {
  const file = join(dataDir, 'admin-token')
  let kept: string | null = null
  try {
    kept = readTokenFile(file)
  } catch {
    return // unreadable: it is not used either way
  }
  if (kept && kept !== configured) {
    log.warn(
      { file, key: 'adminToken' },
      `${file} holds a token made at an earlier start; it is not accepted while adminToken is set`
    )
  }
}
