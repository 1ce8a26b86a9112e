/**
 * Error classes with stable snake_case codes. The code travels over the bus and the HTTP API;
 * callers map it back with `errorFromCode`.
 */
export interface ErrorBody {
  code: string
  message: string
  details?: unknown
}

export class UbError extends Error {
  readonly code: string
  readonly details: unknown
  constructor(code: string, message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'UbError'
    this.code = code
    this.details = options?.details
  }
  toJSON(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details }
  }
}

export class ConfigError extends UbError {
  readonly key: string
  constructor(key: string, problem: string, options?: { cause?: unknown }) {
    super('invalid_config', ConfigError.format(key, problem), options)
    this.name = 'ConfigError'
    this.key = key
  }
  static format(key: string, problem: string): string {
    return `'${key}' ${problem}`
  }
}

export class NotFoundError extends UbError {
  constructor(what: string, id: string) {
    super('not_found', `${what} '${id}' does not exist`, { details: { what, id } })
    this.name = 'NotFoundError'
  }
}

/** The machine's current state does not accept the event; the state is unchanged. */
export class InvalidTransitionError extends UbError {
  constructor(message: string, details?: unknown) {
    super('invalid_transition', message, { details })
    this.name = 'InvalidTransitionError'
  }
}

export class ValidationError extends UbError {
  constructor(message: string, details?: unknown) {
    super('invalid_request', message, { details })
    this.name = 'ValidationError'
  }
}

/** Another writer changed the row first (optimistic concurrency). Safe to retry. */
export class VersionConflictError extends UbError {
  constructor(message: string) {
    super('version_conflict', message)
    this.name = 'VersionConflictError'
  }
}

export class StorageError extends UbError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('storage_unavailable', message, options)
    this.name = 'StorageError'
  }
}

export class BusTimeoutError extends UbError {
  constructor(subject: string, timeoutMs: number) {
    super('bus_timeout', `no reply on '${subject}' within ${timeoutMs} ms`)
    this.name = 'BusTimeoutError'
  }
}

export class NoRespondersError extends UbError {
  constructor(subject: string) {
    super('no_responders', `nobody serves '${subject}'`)
    this.name = 'NoRespondersError'
  }
}

/** KV compare-and-set lost: the key exists (create) or its revision moved on (update). */
export class KvConflictError extends UbError {
  constructor(bucket: string, key: string, message = 'revision mismatch') {
    super('kv_conflict', `${bucket}/${key}: ${message}`)
    this.name = 'KvConflictError'
  }
}

/** Rebuild an error from a code and message that crossed the bus; callers branch on `.code`. */
export function errorFromCode(code: string, message: string, details?: unknown): UbError {
  return new UbError(code, message, { details })
}

/** Turn anything thrown into a body that is safe to send: unknown errors hide their internals. */
export function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof UbError) return err.toJSON()
  return { code: 'internal', message: 'internal error' }
}
