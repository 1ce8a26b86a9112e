/**
 * What every operator command shares on the way out: where it writes (stdout and stderr are
 * functions, so tests run commands in-process and read both), the errors that pick the exit
 * code, and the two output shapes: aligned tables for people, one JSON document for scripts.
 */
export interface Io {
  out(text: string): void
  err(text: string): void
  env: NodeJS.ProcessEnv
  /** Ends a `--follow` (Ctrl-C in a shell); without it a follow runs until the process ends. */
  signal?: AbortSignal
}

export function processIo(signal?: AbortSignal): Io {
  return {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    env: process.env,
    ...(signal ? { signal } : {}),
  }
}

/** A command used wrongly: exit code 2, the message and a pointer to --help. */
export class UsageError extends Error {}

/** The API answered with an error, or could not be reached: exit code 1. */
export class ApiFailure extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly code: string | null
  ) {
    super(message)
  }
}

/** A command that ran but whose result is a failure (a chain that does not verify): exit 1. */
export class CommandFailed extends Error {}

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** One JSON document on stdout, and nothing else. */
export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, null, 2) + '\n')
}

export function printLines(io: Io, lines: string | string[]): void {
  io.out((Array.isArray(lines) ? lines.join('\n') : lines) + '\n')
}

/** Rows under a header, columns padded to the widest cell; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/** `key   value` lines, keys padded; null and undefined values are shown as `-`. */
export function keyValues(pairs: Array<[string, unknown]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${cell(v)}`).join('\n')
}

/** A value as one table cell. */
export function cell(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-'
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return JSON.stringify(v)
}

/** `3d 4h`, `2h 5m`, `4m 12s`, `9s`: the two largest units. */
export function duration(ms: number): string {
  const s = Math.floor(ms / 1_000)
  const units: Array<[string, number]> = [
    ['d', Math.floor(s / 86_400)],
    ['h', Math.floor(s / 3_600) % 24],
    ['m', Math.floor(s / 60) % 60],
    ['s', s % 60],
  ]
  const first = units.findIndex(([, n]) => n > 0)
  if (first === -1) return '0s'
  return units
    .slice(first, first + 2)
    .map(([u, n]) => `${n}${u}`)
    .join(' ')
}
