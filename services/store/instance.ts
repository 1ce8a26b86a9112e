import { randomBytes } from 'node:crypto'
import { sql } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import type { InstanceInfo } from '../contracts/store.ts'
import { sameDigest, sha256Hex } from '../common/digest.ts'
import { newInstanceId } from './ids.ts'

interface InstanceRow {
  instanceId: string
  adminTokenHash: string
  createdAt: string
}

const selectInstance = sql`
  select instance_id as "instanceId", admin_token_hash as "adminTokenHash",
         to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "createdAt"
  from instance`

/**
 * The instance row, made on first call. Token choice: an `adminToken` from config wins and its
 * hash replaces the stored one (config is the operator's latest word); otherwise the first call
 * generates one, stores only its sha-256 and returns the plaintext in that one answer.
 * Two replicas racing on the first start: the insert conflicts on the singleton column, the
 * loser reads the winner's row and gets no token.
 */
export async function ensureInstance(
  db: Db,
  { adminToken }: { adminToken?: string } = {}
): Promise<InstanceInfo> {
  let [row] = await db.execute<InstanceRow>(selectInstance)
  let generated: string | undefined
  if (!row) {
    const token = adminToken ?? 'ubt_' + randomBytes(24).toString('base64url')
    const inserted = await db.execute<{ instanceId: string }>(sql`
      insert into instance (instance_id, admin_token_hash) values (${newInstanceId()}, ${sha256Hex(token)})
      on conflict do nothing returning instance_id as "instanceId"`)
    if (inserted.length && !adminToken) generated = token
    ;[row] = await db.execute<InstanceRow>(selectInstance)
    if (!row) throw new Error('the instance row vanished right after its creation')
  } else if (adminToken && !sameDigest(sha256Hex(adminToken), row.adminTokenHash)) {
    await db.execute(sql`update instance set admin_token_hash = ${sha256Hex(adminToken)}`)
  }
  const info: InstanceInfo = { instanceId: row.instanceId, createdAt: row.createdAt }
  if (generated) info.adminToken = generated
  return info
}

export async function verifyAdminToken(db: Db, token: string): Promise<boolean> {
  const [row] = await db.execute<InstanceRow>(selectInstance)
  return !!row && sameDigest(sha256Hex(token), row.adminTokenHash)
}
