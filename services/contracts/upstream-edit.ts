/**
 * The store verbs that change an upstream's row: `upstream.edit` (its connection, audited) and
 * `upstream.patch` (fields outside the lifecycle). store.ts lists them with the other verbs.
 */
import { z } from 'zod'
import {
  ActorSchema,
  HostUrl,
  Id,
  Port,
  RequestKey,
  Retry,
  TlsSchema,
  type TlsOptions,
} from './values.ts'

/** `upstream.patch`: fields outside the lifecycle, not audited (no seq change). */
export const PatchUpstreamInputSchema = z.object({
  id: Id,
  lastError: z.string().max(4_096).nullable().optional(),
  remoteRequestId: z.string().max(4_096).nullable().optional(),
  withdrawalOwed: z.boolean().optional(),
})

/** TLS options to change: a field given replaces it, null removes it, one left out stays. */
export const TlsPatchSchema = z.strictObject({
  ca: TlsSchema.shape.ca.unwrap().nullable().optional(),
  cert: TlsSchema.shape.cert.unwrap().nullable().optional(),
  key: TlsSchema.shape.key.unwrap().nullable().optional(),
  servername: TlsSchema.shape.servername.unwrap().nullable().optional(),
  rejectUnauthorized: z.boolean().nullable().optional(),
})
export type TlsPatch = z.infer<typeof TlsPatchSchema>

/** TLS options after a patch: a field given replaces, null removes, absent stays; none left is null. */
export function patchTls(old: TlsOptions | null, patch: TlsPatch | null | undefined) {
  if (patch === undefined) return old
  if (patch === null) return null
  const next: Record<string, unknown> = { ...old }
  for (const [field, value] of Object.entries(patch)) {
    if (value === null) delete next[field]
    else if (value !== undefined) next[field] = value
  }
  return Object.keys(next).length > 0 ? (next as TlsOptions) : null
}

/**
 * The store verb `upstream.edit`, an edit of an upstream's connection (README, Edit an upstream): fields left out stay; `tls`
 * null removes the TLS options, an object changes them field by field (TlsPatchSchema).
 */
export const EditUpstreamInputSchema = z.object({
  requestKey: RequestKey,
  retry: Retry,
  id: Id,
  host: HostUrl.optional(),
  brokerPort: Port.optional(),
  httpPort: Port.optional(),
  tls: TlsPatchSchema.nullable().optional(),
  actor: ActorSchema,
})
export type EditUpstreamInput = z.input<typeof EditUpstreamInputSchema>

/**
 * What `upstream.edit` answers: the upstream afterwards and its log row, null when every field
 * was as it is (nothing changed, nothing logged). Made from store.ts's schemas, which import this.
 */
export const editResultOf = <U extends z.ZodType, R extends z.ZodType>(upstream: U, record: R) =>
  z.object({ upstream, record: record.nullable() })

/** Its columns change with it in one transaction: only the store's `upstream.edit` sends it. */
export const EDIT_EVENT = 'upstream.connection.set'
