/**
 * MQTT strings must be well-formed UTF-8 without U+0000, else the connection is closed
 * [MQTT-1.5.3-1], [MQTT-1.5.3-2]. mqtt-packet decodes leniently (bad bytes become U+FFFD), so a
 * topic with broken bytes would be published under a name its sender never wrote. Its string
 * reader is wrapped per client: only a string that decoded to U+FFFD or holds U+0000 costs a
 * second, strict look.
 */
const strict = new TextDecoder('utf-8', { fatal: true })

interface StringParser {
  _pos: number
  _list: { slice(start: number, end: number): Buffer }
  _parseString(maybeBuffer?: unknown): string | null
  _emitError(err: Error): void
}

/** Make `parser` refuse malformed UTF-8 and U+0000 in every string it reads from now on. */
export function requireWellFormedStrings(parser: unknown): void {
  const p = parser as StringParser
  if (typeof p?._parseString !== 'function') return
  const parseString = p._parseString
  p._parseString = function strictParseString(this: StringParser, maybeBuffer?: unknown) {
    const lengthAt = this._pos
    const text = parseString.call(this, maybeBuffer)
    if (text === null || (!text.includes('\uFFFD') && !text.includes('\u0000'))) return text
    let problem = text.includes('\u0000') ? 'a string holds U+0000' : undefined
    if (!problem) {
      try {
        strict.decode(this._list.slice(lengthAt + 2, this._pos)) // a real U+FFFD is fine
      } catch {
        problem = 'a string is not well-formed UTF-8'
      }
    }
    if (!problem) return text
    this._emitError(new Error(`malformed packet: ${problem}`))
    return null
  }
}
