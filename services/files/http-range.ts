/**
 * One byte range of RFC 9110 §14 (`Range: bytes=a-b`, `bytes=a-`, `bytes=-n`): what a resumed
 * download sends. Several ranges at once are answered with the whole file, as the RFC allows.
 */
export type RangeAnswer =
  { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' }

const ONE_RANGE = /^bytes=(\d*)-(\d*)$/

export function parseRange(header: string | undefined, size: number): RangeAnswer {
  if (header === undefined) return { kind: 'full' }
  const m = ONE_RANGE.exec(header.trim())
  if (!m) return { kind: 'full' } // another unit or a list: ignored (RFC 9110 §14.2)
  const [, first = '', last = ''] = m
  if (first === '' && last === '') return { kind: 'full' }
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
  if (last !== '' && Number(last) < start) return { kind: 'full' } // invalid: ignored
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end }
}

/** The ETag of a file: its SHA-256, a strong validator. */
export const etagOf = (sha256: string): string => `"${sha256}"`

/** Does an If-None-Match / If-Match header name this ETag (or `*`)? */
export function etagListMatches(header: string, etag: string): boolean {
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .some((t) => t === '*' || t === etag)
}

/**
 * The SHA-256 (hex) an upload says its content has, from `Content-Digest` / `Repr-Digest`
 * (RFC 9530: `sha-256=:<base64>:`) or the older `Digest: SHA-256=<base64>` (RFC 3230);
 * undefined when none names SHA-256, null when one does but is malformed.
 */
export function expectedSha256(headers: {
  get(name: string): string | undefined
}): string | undefined | null {
  for (const name of ['content-digest', 'repr-digest']) {
    const value = headers.get(name)
    if (value === undefined) continue
    const m = /(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]+):/i.exec(value)
    if (m) return fromBase64(m[1]!)
  }
  const legacy = headers.get('digest')
  if (legacy !== undefined) {
    const m = /(?:^|,)\s*sha-256=([A-Za-z0-9+/=]+)/i.exec(legacy)
    if (m) return fromBase64(m[1]!)
  }
  return undefined
}

function fromBase64(b64: string): string | null {
  const bytes = Buffer.from(b64, 'base64')
  return bytes.length === 32 ? bytes.toString('hex') : null
}
