import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { sha256Hex } from '../common/digest.ts'

export interface AdminToken {
  /** The plaintext token, known to this process only to print it; never stored in the database. */
  token: string
  hash: string
  /** True when this start made it: the only time it is printed in full. */
  created: boolean
  file: string | null
}

export const hashToken = sha256Hex

/**
 * The operator token: from config when given, else the data folder's `admin-token` file
 * (mode 0600, like k3s's node-token), made at first start. Only its hash goes further.
 */
export function resolveAdminToken({
  configured,
  dataDir,
}: {
  configured: string | undefined
  dataDir: string
}): AdminToken {
  if (configured)
    return { token: configured, hash: hashToken(configured), created: false, file: null }
  const file = join(dataDir, 'admin-token')
  try {
    const token = readFileSync(file, 'utf8').trim()
    if (token) return { token, hash: hashToken(token), created: false, file }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const token = 'ubt_' + randomBytes(24).toString('base64url')
  writeFileSync(file, token + '\n', { mode: 0o600, flag: 'wx' })
  return { token, hash: hashToken(token), created: true, file }
}
