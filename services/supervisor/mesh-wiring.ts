import type { Logger } from '../common/log.ts'
import type { RunningLinks } from './link-runner.ts'
import { startMesh, type Mesh, type MeshOptions } from './mesh.ts'

/** The mesh spanning tree, fed with the running handshake links and applied back to them. */
export interface MeshWiring {
  readonly mesh: Mesh
  /** Block or unblock each running link as the tree now says. */
  apply(): Promise<void>
}

export async function wireMesh({
  running,
  log,
  ...options
}: Omit<MeshOptions, 'links' | 'onChange'> & { running: RunningLinks }): Promise<MeshWiring> {
  const mesh: Mesh = await startMesh({
    ...options,
    links: () =>
      [...running.values()]
        .filter((r) => r.upstream.kind === 'uns')
        .map((r) => ({
          upstream: r.upstream,
          peer: r.peer(),
          ...(r.teRoot ? { teRoot: r.teRoot } : {}),
        })),
    onChange: () => void apply(),
    log,
  })

  /**
   * A blocked link keeps its connections and its gateway session but subscribes to nothing: it
   * still counts as a mesh edge (so the tree can fall back on it at once), nothing queues for it
   * while blocked (everything it would carry reaches its peer over the tree), and unblocking is
   * one SUBSCRIBE. It keeps its bindings: what was already queued for it, or in flight, when the
   * block landed still goes upstream over it instead of being dropped as unrouted.
   */
  async function apply(): Promise<void> {
    for (const [id, r] of running) {
      const want = r.upstream.kind === 'uns' && mesh.blocks(r.peer())
      if (want === r.blocked) continue
      r.blocked = want
      log.info({ upstreamId: id, peer: r.peer(), blocked: want }, 'mesh spanning tree')
      await r.link.setBlocked(want)
      r.status.touch()
    }
  }

  return { mesh, apply }
}
