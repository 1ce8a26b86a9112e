/** The bearer token of an `Authorization` header, if it has one (RFC 6750 §2.1). */
export function bearerToken(header: string | undefined): string | null {
  const m = header?.match(/^Bearer +(\S+)\s*$/i)
  return m ? m[1]! : null
}
