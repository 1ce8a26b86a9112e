/**
 * Where this instance's thin-edge.io tree shows on an upstream: each binding going up (`out`,
 * `both`) whose source holds the teRoot or lies under it, as a mount `{target, path}`
 * (`<target>/<rest>` upstream is `<teRoot>[/<path>]/<rest>` here). The supervisor sends them in
 * the topology exchange; the upstream keeps those inside our grants and lists the entities
 * under them as ours (services/gateway/edge/te-mounted.ts). Remaps (`+`, `{n}`) mount nothing.
 */
import type { Binding } from '../../machines/index.ts'
import type { TopologyExchange } from '../common/topology-db.ts'
import type { Upstream } from '../contracts/store.ts'
import { TE_MAX_MOUNTS, type TeMount } from '../contracts/te-entities.ts'

const REFUSED_MAX = 10_000 // upstreams remembered as refusing mounts; past it, forgotten at once

const ENTITY_SEGMENTS = 4

export function teMountsOf(bindings: readonly Binding[], teRoot: string | undefined): TeMount[] {
  if (!teRoot) return []
  const mounts: TeMount[] = []
  for (const b of bindings) {
    if (b.direction === 'in') continue
    const source = b.source.replace(/\/#$/, '')
    const target = b.target.replace(/\/#$/, '')
    if (/[+#{]/.test(source) || /[+#{]/.test(target)) continue
    let mount: TeMount | null = null
    if (source === teRoot) mount = { target, path: '' }
    else if (teRoot.startsWith(`${source}/`))
      mount = { target: `${target}${teRoot.slice(source.length)}`, path: '' }
    else if (source.startsWith(`${teRoot}/`)) {
      const path = source.slice(teRoot.length + 1)
      if (path.split('/').length < ENTITY_SEGMENTS) mount = { target, path }
    }
    if (mount && !mounts.some((m) => m.target === mount.target)) mounts.push(mount)
    if (mounts.length === TE_MAX_MOUNTS) break
  }
  return mounts
}

/**
 * The topology exchange's body with our mounts for that upstream, always (an empty list takes
 * back what was declared). A server older than mounts refuses the key (400): that upstream is
 * then asked without it, as before.
 */
export function createMountDeclarer() {
  const refusing = new Set<string>()
  return {
    declare(upstream: Upstream, teRoot: string | undefined, mine: TopologyExchange) {
      if (refusing.has(upstream.id)) return mine
      return { ...mine, teMounts: teMountsOf(upstream.bindings as Binding[], teRoot) }
    },
    refused(upstreamId: string) {
      if (refusing.size >= REFUSED_MAX) refusing.clear()
      refusing.add(upstreamId)
    },
  }
}
