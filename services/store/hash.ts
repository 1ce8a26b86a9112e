import { sha256Hex } from '../common/digest.ts'
import type { TransitionRecord } from '../contracts/store.ts'

/** What the first row of every machine's log chains to. */
export const GENESIS_HASH = '0'.repeat(64)

/**
 * JSON with object keys sorted and `undefined` members dropped, so the same content hashes the
 * same after a jsonb round trip (jsonb reorders keys and drops nothing JSON would keep).
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    return value === undefined ? 'null' : JSON.stringify(value)
  }
  if (Array.isArray(value)) {
    let out = '['
    for (let i = 0; i < value.length; i++) {
      if (i) out += ','
      const item = value[i]
      out += item === undefined ? 'null' : canonicalJson(item)
    }
    return out + ']'
  }
  const obj = value as Record<string, unknown>
  const keys = Object.keys(obj).sort()
  let out = '{'
  let first = true
  for (const key of keys) {
    const item = obj[key]
    if (item === undefined) continue
    if (!first) out += ','
    first = false
    out += JSON.stringify(key) + ':' + canonicalJson(item)
  }
  return out + '}'
}

/** The fields a row's hash covers: everything but the hash itself and the global position. */
export type HashedFields = Omit<TransitionRecord, 'hash' | 'prevHash'>

/** A row's content with its JSON members already in canonical form. */
export interface CanonicalParts {
  machine: string
  machineId: string
  seq: number
  event: string
  actor: string
  from: string | null
  to: string
  snapshot: string
  machineVersion: number
  at: string
}

/**
 * The canonical JSON of the hashed fields, assembled from parts (keys in sorted order), so the
 * auditor can reuse one canonical form per distinct event or snapshot instead of re-serializing
 * every row. Equal to `canonicalJson` of the same fields as an object.
 */
export function canonicalContent(p: CanonicalParts): string {
  return (
    `{"actor":${p.actor},"at":${JSON.stringify(p.at)},"event":${p.event},` +
    `"from":${p.from === null ? 'null' : JSON.stringify(p.from)},"machine":${JSON.stringify(p.machine)},` +
    `"machineId":${JSON.stringify(p.machineId)},"machineVersion":${p.machineVersion},"seq":${p.seq},` +
    `"snapshot":${p.snapshot},"to":${JSON.stringify(p.to)}}`
  )
}

/** A row's hash: its predecessor's hash chained to its canonical content. */
export function chainedHash(prevHash: string, parts: CanonicalParts): string {
  return sha256Hex(prevHash + canonicalContent(parts))
}

export function transitionHash(prevHash: string, row: HashedFields): string {
  return chainedHash(prevHash, {
    ...row,
    event: canonicalJson(row.event),
    actor: canonicalJson(row.actor),
    snapshot: canonicalJson(row.snapshot),
  })
}
