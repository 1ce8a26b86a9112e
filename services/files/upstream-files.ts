/**
 * Where a local file lies on this instance's upstreams, by their bindings (a path's levels are
 * topic levels), and how to reach it there: what pull-through.ts (coming in) and push-up.ts
 * (going out) share.
 */
import { compileBinding } from '../../machines/index.ts'
import { handshakeBase } from '../contracts/handshake-client.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { Upstream } from '../contracts/store.ts'
import { fileUrlPath } from '../contracts/file-paths.ts'
import type { RemoteFile } from './remote-file.ts'

/**
 * The upstream paths of local file `name`, one per binding of a handshake upstream that carries
 * it the given way (`in`: bindings in and both; `out`: out and both).
 */
export function upstreamPaths(
  upstreams: readonly Upstream[],
  name: string,
  way: 'in' | 'out'
): Array<{ upstream: Upstream; path: string }> {
  const found: Array<{ upstream: Upstream; path: string }> = []
  for (const upstream of upstreams) {
    if (upstream.kind !== 'uns') continue
    for (const binding of upstream.bindings) {
      const c = compileBinding(binding)
      if (c.direction !== 'both' && c.direction !== way) continue
      const path = c.toUpstream(name)
      if (path !== null) found.push({ upstream, path })
    }
  }
  return found
}

/** The file at `path` in `upstream`'s file service, as this downstream (its handshake secret). */
export async function remoteFileOf(
  store: StoreClient,
  instanceId: string,
  upstream: Upstream,
  path: string
): Promise<RemoteFile> {
  const credentials = await store.call('upstream.credentials', { id: upstream.id })
  return {
    url: handshakeBase(upstream) + fileUrlPath(path),
    tls: upstream.tls,
    username: credentials.username ?? instanceId,
    password: credentials.password ?? '',
  }
}
