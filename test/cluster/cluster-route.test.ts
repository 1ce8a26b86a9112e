import { afterEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../services/common/log.ts'
import { startPresence } from '../../services/common/presence.ts'
import { startNode, type Node } from '../handshake/fixture.ts'

/** The route on a handshake API in this process (real store on PGlite, in-process bus). */
describe('GET /api/v1/cluster', () => {
  let n: Node | undefined
  afterEach(async () => {
    await n?.close()
    n = undefined
  })

  it('answers an empty view with every service counted at 0 when nobody announces', async () => {
    n = await startNode()
    expect(await n.call('/api/v1/cluster')).toEqual({
      members: [],
      counts: { store: 0, gateway: 0, supervisor: 0, handshake: 0 },
      omitted: 0,
    })
  })

  it('lists what the processes on its bus announce, by service then host', async () => {
    n = await startNode()
    const log = silentLogger()
    const edge = await startPresence({ bus: n.bus, log, host: 'edge-b', pid: 20 })
    const core = await startPresence({ bus: n.bus, log, host: 'edge-a', pid: 10 })
    try {
      edge.join('gateway', () => ({
        gateway: { gatewayId: 'gw-b', clients: 7, ports: { mqtt: 1883 } },
      }))
      core.join('supervisor', () => ({
        supervisor: {
          supervisorId: 'sup-a',
          bridges: [{ upstreamId: 'up_1', host: 'mqtt://cloud', state: 'Forwarding' }],
        },
      }))
      core.join('gateway', () => ({
        gateway: { gatewayId: 'gw-a', clients: 2, ports: { mqtt: 1884 } },
      }))
      await Promise.all([edge.announce(), core.announce()])
      const view = await n.call('/api/v1/cluster')
      expect(view.counts).toEqual({ store: 0, gateway: 2, supervisor: 1, handshake: 0 })
      expect(view.members.map((m: any) => [m.service, m.host, m.pid])).toEqual([
        ['gateway', 'edge-a', 10],
        ['gateway', 'edge-b', 20],
        ['supervisor', 'edge-a', 10],
      ])
      expect(view.members[1].gateway).toEqual({
        gatewayId: 'gw-b',
        clients: 7,
        ports: { mqtt: 1883 },
      })
      expect(view.members[2].supervisor).toEqual({
        supervisorId: 'sup-a',
        bridgeCount: 1,
        bridges: [{ upstreamId: 'up_1', host: 'mqtt://cloud', state: 'Forwarding' }],
      })

      await edge.close()
      const after = await n.call('/api/v1/cluster')
      expect(after.members.map((m: any) => m.host)).toEqual(['edge-a', 'edge-a'])
    } finally {
      await Promise.all([edge.close(), core.close()])
    }
  })

  it('answers 503 with the bus code, not 500, when the bus is gone', async () => {
    n = await startNode()
    await n.bus.close()
    const res = await n.api('/api/v1/cluster')
    expect(res.status).toBe(503)
    expect(((await res.json()) as any).error.code).toBe('bus_closed')
  })
})
