/**
 * A file's path under `/te/v1/files/` is a list of topic levels: `/te/v1/files/acme/site1/fw.bin`
 * lies in namespace `acme/site1`, and the same grants cover it as the topic `acme/site1/fw.bin`.
 * So a level is what a topic level may be and no more: no empty level (`a//b`, a trailing slash
 * naming a directory), no `.` or `..`, no `+` or `#` (wildcards), no `/` hidden as `%2F`, no
 * control characters, and valid UTF-8 once percent-decoded.
 */
import { BLOB_NAME_MAX_BYTES } from '../common/bus/blobs.ts'

export const FILES_PREFIX = '/te/v1/files/'
/** Levels a path may have: each PUT checks every level above the file (a file may not lie under a file). */
export const MAX_LEVELS = 32

export type FilePathProblem = { code: 'invalid_path' | 'is_directory'; message: string }

// C0 controls and DEL: no level of a topic anyone would name a file with.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/

/** The file name (levels joined by `/`) of the raw URL path, or why it is not one. */
export function parseFilePath(rawPath: string): string | FilePathProblem {
  if (!rawPath.startsWith(FILES_PREFIX))
    return { code: 'invalid_path', message: `a file path starts with ${FILES_PREFIX}` }
  const raw = rawPath.slice(FILES_PREFIX.length)
  if (raw === '' || raw.endsWith('/'))
    return { code: 'is_directory', message: 'the path names a directory, not a file' }
  const levels: string[] = []
  const encodedLevels = raw.split('/')
  if (encodedLevels.length > MAX_LEVELS)
    return { code: 'invalid_path', message: `a path has at most ${MAX_LEVELS} levels` }
  for (const encoded of encodedLevels) {
    let level: string
    try {
      level = decodeURIComponent(encoded)
    } catch {
      return { code: 'invalid_path', message: 'the path is not valid percent-encoded UTF-8' }
    }
    const problem = levelProblem(level)
    if (problem) return { code: 'invalid_path', message: problem }
    levels.push(level)
  }
  const name = levels.join('/')
  if (Buffer.byteLength(name) > BLOB_NAME_MAX_BYTES)
    return { code: 'invalid_path', message: `the path is longer than ${BLOB_NAME_MAX_BYTES} bytes` }
  return name
}

function levelProblem(level: string): string | null {
  if (level === '') return 'the path has an empty level (//)'
  if (level === '.' || level === '..') return "the path may not contain '.' or '..' levels"
  if (level.includes('/')) return "a level may not contain an encoded '/'"
  if (level.includes('+') || level.includes('#'))
    return "a level may not contain '+' or '#' (file paths are topic levels)"
  if (CONTROL.test(level)) return 'a level may not contain control characters'
  if (level.includes('\ufffd')) return 'the path is not valid UTF-8'
  return null
}

export const isPathProblem = (v: string | FilePathProblem): v is FilePathProblem =>
  typeof v !== 'string'

/** The URL path of a file name (each level percent-encoded). */
export const fileUrlPath = (name: string): string =>
  FILES_PREFIX + name.split('/').map(encodeURIComponent).join('/')
