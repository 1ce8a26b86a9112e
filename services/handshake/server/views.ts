import type { Upstream } from '../../contracts/store.ts'

/** An upstream as the API shows it: everything but the TLS private key. */
export function upstreamView(up: Upstream): Upstream {
  if (!up.tls?.key) return up
  const { key: _key, ...tls } = up.tls
  return { ...up, tls }
}
