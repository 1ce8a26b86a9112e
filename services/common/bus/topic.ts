/**
 * MQTT topic ↔ NATS subject (ARCHITECTURE.md §7, §13). It matches nats-server's own MQTT
 * mapping (`/`→`.`, an empty level → token `/`, `.`→`//` as in 2.10+, `+`→`*`, `#`→`>`) and is
 * bijective for every MQTT topic: `%` and whitespace are percent-escaped and a level that is
 * exactly `*` or `>` becomes `%2A`/`%3E`, so no topic turns into a wildcard.
 *
 * Decoding is unambiguous because an MQTT level never contains `/`: a token that is exactly `/`
 * is an empty level, and `//` inside a token can only have come from `.`.
 */
const EMPTY_LEVEL = '/'

// `%` goes first so that the escapes added after it are never escaped again.
const ESCAPES: Array<[string, string]> = [
  ['%', '%25'],
  ['.', '//'],
  [' ', '%20'],
  ['\t', '%09'],
  ['\r', '%0D'],
  ['\n', '%0A'],
]

function encodeLevel(level: string): string {
  if (level === '') return EMPTY_LEVEL
  if (level === '*') return '%2A'
  if (level === '>') return '%3E'
  let out = level
  for (const [raw, esc] of ESCAPES) out = out.split(raw).join(esc)
  return out
}

function decodeToken(token: string): string {
  if (token === EMPTY_LEVEL) return ''
  // One left-to-right pass, so `%252A` (a literal `%2A`) decodes to `%2A`, not `*`.
  return token
    .replace(/\/\//g, '.')
    .replace(/%([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
}

/** MQTT topic name (no wildcards) → NATS subject tokens joined with `.`. */
export function topicToSubject(topic: string): string {
  return topic.split('/').map(encodeLevel).join('.')
}

/** Inverse of `topicToSubject`. */
export function subjectToTopic(subject: string): string {
  return subject.split('.').map(decodeToken).join('/')
}

/**
 * MQTT filter → the NATS subjects to subscribe to. `a/#` also matches the parent `a`
 * [MQTT-4.7.1-2], which NATS `a.>` does not, so it needs a second subject.
 */
export function filterToSubjects(filter: string): string[] {
  const levels = filter.split('/')
  const encoded = levels.map((l) => (l === '+' ? '*' : l === '#' ? '>' : encodeLevel(l)))
  if (levels[levels.length - 1] !== '#' || levels.length === 1) return [encoded.join('.')]
  return [encoded.join('.'), encoded.slice(0, -1).join('.')]
}
