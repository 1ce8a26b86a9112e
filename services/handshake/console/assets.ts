import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The browser side of the console: plain ES modules, CSS and HTML, served as they are. */
export const ASSETS_DIR = fileURLToPath(new URL('./assets/', import.meta.url))

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
}

export interface Asset {
  body: Uint8Array
  type: string
  etag: string
}

/**
 * Every file of `dir` (one level, known types only), read once: a request names a file of this
 * map or gets a 404, so no path from a URL ever reaches the file system.
 */
export function loadAssets(dir: string = ASSETS_DIR): Map<string, Asset> {
  const assets = new Map<string, Asset>()
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const type = TYPES[extname(entry.name)]
    if (!entry.isFile() || !type) continue
    const body = new Uint8Array(readFileSync(join(dir, entry.name)))
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`
    assets.set(entry.name, { body, type, etag })
  }
  return assets
}

/** Does an If-None-Match header name this ETag (or `*`)? */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .some((t) => t === etag || t === '*')
}
