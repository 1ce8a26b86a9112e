import { readFileSync } from 'node:fs'

/** This build's version, from package.json; `0.0.0` when bundled or moved without it. */
export function packageVersion(): string {
  try {
    const url = new URL('../../package.json', import.meta.url)
    return (JSON.parse(readFileSync(url, 'utf8')) as { version?: string }).version ?? '0.0.0'
  } catch {
    return '0.0.0' // the version is unknown; the API and the cluster view still work
  }
}
