import { StorageError, UbError, ValidationError, VersionConflictError } from '../common/errors.ts'

const MAX_ATTEMPTS = 5
const RETRY_JITTER_MS = 8 // spread retries so the losers of one race do not collide again

/** The SQLSTATE of a driver error; drizzle wraps it in DrizzleQueryError with the cause inside. */
export function sqlState(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
  }
  return undefined
}

/**
 * Everything the store throws leaves as a UbError: our own errors as they are, races as
 * VersionConflictError (the caller retries), data the database refused as invalid_request, and
 * everything else (connection refused or reset, closed client, disk full) as storage_unavailable.
 */
export function toStoreError(err: unknown): UbError {
  if (err instanceof UbError) return err
  const code = sqlState(err)
  // 40001 serialization failure, 40P01 deadlock, 23505 unique violation: another writer won a race.
  if (code === '40001' || code === '40P01' || code === '23505')
    return new VersionConflictError(`a concurrent write won (SQLSTATE ${code}); retry`)
  if (code && (code.startsWith('22') || code.startsWith('23')))
    return new ValidationError(`the database refused the data (SQLSTATE ${code})`)
  return new StorageError('the binding store database is unavailable', { cause: err })
}

/** Run a whole command again when it lost an optimistic-concurrency race. */
export async function withRetry<T>(command: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await command(attempt)
    } catch (err) {
      const e = toStoreError(err)
      if (!(e instanceof VersionConflictError) || attempt >= MAX_ATTEMPTS) throw e
      await new Promise((resolve) => setTimeout(resolve, Math.random() * RETRY_JITTER_MS * attempt))
    }
  }
}
