import { readFileSync, statSync } from 'node:fs'
import type { TlsOptions } from '../../contracts/store.ts'
import { ApiError } from './errors.ts'

const MAX_PEM_BYTES = 64 * 1_024 // as the TLS schema's bound on PEM text
const PEM_TEXT = /-----BEGIN [A-Z0-9 ]+-----/
const FIELDS = ['ca', 'cert', 'key'] as const

/** What a file named by each field must hold: certificates, or a private key (and nothing else). */
function pemProblem(field: (typeof FIELDS)[number], text: string): string | null {
  const privateKey = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)
  if (field === 'key') return privateKey ? null : 'holds no PEM private key'
  if (privateKey) return 'holds a private key, not certificates only'
  return /-----BEGIN CERTIFICATE-----/.test(text) ? null : 'holds no PEM certificate'
}

function refuse(field: string, message: string, cause?: unknown): never {
  const path = `tls.${field}`
  throw new ApiError(400, 'invalid_request', `${path}: ${message}`, {
    cause,
    details: [{ path, message }],
  })
}

function readPemFile(field: (typeof FIELDS)[number], path: string): string {
  let text: string
  try {
    const stat = statSync(path)
    // A regular file only: a device or FIFO (/dev/zero, /dev/stdin) would never end.
    if (!stat.isFile()) refuse(field, `is neither PEM text nor a regular file (${path})`)
    if (stat.size > MAX_PEM_BYTES) refuse(field, `${path} is larger than 64 KiB`)
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if (err instanceof ApiError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    return refuse(field, `is neither PEM text nor a readable file (${path}: ${code})`, err)
  }
  const problem = pemProblem(field, text)
  if (problem) refuse(field, `${path} ${problem}`)
  return text
}

/**
 * An upstream's `tls.ca`, `tls.cert` and `tls.key` are PEM text or the path of a PEM file on
 * this API's host, read now and kept as PEM (README, HTTP API): a later start or another
 * process needs no file. Unreadable or not PEM is 400 `invalid_request` naming the field.
 */
export function resolveTlsFiles(tls: TlsOptions): TlsOptions {
  const out: TlsOptions = { ...tls }
  for (const field of FIELDS) {
    const value = tls[field]
    if (value === undefined || PEM_TEXT.test(value)) continue
    out[field] = readPemFile(field, value.trim())
  }
  return out
}
