import type { Bus } from '../../common/bus/bus.ts'
import { decodeJson } from '../../common/bus/bus.ts'
import { DEFAULT_MESH_CLOCK_SKEW_MS, openTopologyDb } from '../../common/topology-db.ts'
import type { StoredAdvert } from '../../common/topology.ts'
import { LINKS_BUCKET, type LinkStatus } from '../../contracts/links.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { RouteUpstream } from './route-plan.ts'

/**
 * What the route dry run and the mesh view read, each from its owner: the upstreams from the
 * store, each bridge's status from the `links` bucket, the adverts from the topology database.
 */
export async function readRouteInputs({
  store,
  bus,
  instanceId,
  meshClockSkewMs,
}: {
  store: StoreClient
  bus: Bus
  instanceId: string
  meshClockSkewMs?: number | undefined
}): Promise<{ upstreams: RouteUpstream[]; adverts: StoredAdvert[] }> {
  const [upstreams, links, topologyDb] = await Promise.all([
    store.call('upstream.list', {}),
    bus.kv(LINKS_BUCKET),
    openTopologyDb(bus, { instanceId, skewMs: meshClockSkewMs ?? DEFAULT_MESH_CLOCK_SKEW_MS }),
  ])
  const withLinks: RouteUpstream[] = await Promise.all(
    upstreams.map(async (up) => {
      const entry = await links.get(up.id)
      const link = entry ? decodeJson<LinkStatus>(entry.value) : null
      return {
        id: up.id,
        host: up.host,
        status: up.status,
        bindings: up.bindings,
        link: link ? { state: link.state, peerInstanceId: link.peerInstanceId } : null,
      }
    })
  )
  return { upstreams: withLinks, adverts: await topologyDb.read() }
}
