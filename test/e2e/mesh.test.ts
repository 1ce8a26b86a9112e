import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { bridge, PLAIN, until, type BridgeTransport } from '../helpers/bridging.ts'
import { api, startInstance, type Instance } from '../helpers/instance.ts'
import { selfSigned } from '../helpers/tls.ts'
import { startTlsSniffer, type TlsSniffer } from '../helpers/tls-sniffer.ts'

interface Link {
  from: Instance
  to: Instance
  id: string
}

const pair = (l: Link) => [l.from.instanceId, l.to.instanceId].sort().join(' ')

/**
 * ARCHITECTURE.md §9, "a spanning tree over the bridge graph": three real instances, each pair
 * bridged both ways on the same namespace. Split horizon stops only the immediate echo; without
 * the tree a message would go A→B→C→A→… for ever. With it one edge of the triangle is blocked on
 * both ends and every message arrives exactly once everywhere; when a tree edge goes away, the
 * blocked edge takes over. `MESH_TREE=false` runs the same test with blocking off (it fails).
 */
/**
 * The same triangle over mqtts:// with every handshake API on https only: peer discovery and the
 * topology exchange must go over https too, or the tree never forms and messages loop (and the
 * secret would cross in the clear). A port in front of each https listener records anything
 * that is not TLS.
 *
 * The suite runs the secure triangle only (it takes the plain one's path plus TLS; the plain
 * transport is covered by every other two-instance test); `UB_MESH_PLAIN=1` adds the plain one.
 */
const TRANSPORTS = [
  ...(process.env.UB_MESH_PLAIN === '1' ? [{ secure: false }] : []),
  { secure: true },
]

describe.each(TRANSPORTS)(
  'three instances bridged pairwise both ways (a triangle), secure: $secure',
  ({ secure }) => {
    const treeOn = process.env.MESH_TREE !== 'false'
    let insts: Instance[] = []
    const links: Link[] = []
    const clients: MqttClient[] = []
    const counts = new Map<Instance, Map<string, number>>()
    const sniffers = new Map<Instance, TlsSniffer>()
    // In front of each instance's MQTT TLS port: the bridges' logins (their secret) go through it.
    const mqttSniffers = new Map<Instance, TlsSniffer>()

    /** State of every active link, keyed by its instance pair, once all are up and agree. */
    async function settledStates(active: Link[]): Promise<Map<string, string>> {
      const read = async () => {
        const byPair = new Map<string, string[]>()
        for (const l of active) {
          const { link } = await api(l.from, 'GET', `/api/v1/upstreams/${l.id}`)
          if (link?.peerInstanceId !== l.to.instanceId) return undefined
          if (link.state !== 'Forwarding' && link.state !== 'Blocked') return undefined
          byPair.set(pair(l), [...(byPair.get(pair(l)) ?? []), link.state])
        }
        // Both ends of an edge agree, and exactly one edge of the loop (if any) is blocked.
        const states = new Map<string, string>()
        for (const [p, s] of byPair) {
          if (new Set(s).size !== 1) return undefined
          states.set(p, s[0]!)
        }
        const blocked = [...states.values()].filter((s) => s === 'Blocked').length
        const loops = treeOn ? states.size - (insts.length - 1) : 0
        return blocked === loops ? states : undefined
      }
      for (;;) {
        const first = await until('the mesh to converge', read, 90_000)
        // Stable across a few topology rounds, not a snapshot of a moment in convergence.
        await new Promise((r) => setTimeout(r, 1_500))
        const again = await read()
        if (again && JSON.stringify([...again]) === JSON.stringify([...first])) return again
      }
    }

    async function sendAndCount(tag: string, n: number): Promise<void> {
      for (const m of counts.values()) m.clear()
      const sent: string[] = []
      const pubs = await Promise.all(insts.map((i) => connectMqtt(i.mqttUrl!)))
      clients.push(...pubs)
      for (let k = 0; k < n; k++) {
        for (const [i, pub] of pubs.entries()) {
          const topic = `plant/${i}/temp`
          await pub.publishAsync(topic, `${tag}${k}`, { qos: 1 })
          sent.push(`${topic} ${tag}${k}`)
        }
      }
      await until(
        'every message on every instance',
        async () =>
          [...counts.values()].every((m) => sent.every((k) => m.has(k))) ? true : undefined,
        60_000
      )
      // A looping message would come round again within a few hops: keep listening a while.
      await new Promise((r) => setTimeout(r, 1_500))
      for (const [inst, m] of counts) {
        expect({ instance: inst.instanceId, copies: new Map(m) }).toEqual({
          instance: inst.instanceId,
          copies: new Map(sent.map((k) => [k, 1])),
        })
      }
    }

    beforeAll(async () => {
      const args = [
        ...['--handshake-poll-ms', '100', '--handshake-slow-poll-ms', '500'],
        ...['--topology-interval-ms', '250', '--mesh-tree', String(treeOn)],
      ]
      const pem = secure ? selfSigned() : undefined
      insts = await Promise.all(
        [0, 1, 2].map(() => startInstance({ args, ...(pem ? { tls: pem } : {}) }))
      )
      if (pem) {
        for (const inst of insts) {
          const port = Number(new URL(inst.httpUrl).port)
          sniffers.set(inst, await startTlsSniffer({ host: '127.0.0.1', port }))
          const mqtts = Number(new URL(inst.mqttsUrl!).port)
          mqttSniffers.set(inst, await startTlsSniffer({ host: '127.0.0.1', port: mqtts }))
        }
      }
      const transport: BridgeTransport = pem
        ? {
            host: 'mqtts://localhost',
            brokerPort: (to) => mqttSniffers.get(to)!.port,
            httpPort: (to) => sniffers.get(to)!.port,
            tls: { ca: pem.cert },
          }
        : PLAIN
      const plant = [{ source: 'plant', target: 'plant' }]
      for (const [x, y] of [
        [0, 1],
        [1, 2],
        [2, 0],
      ] as const) {
        const ends: Array<[Instance, Instance]> = [
          [insts[x]!, insts[y]!],
          [insts[y]!, insts[x]!],
        ]
        for (const [from, to] of ends) {
          links.push({ from, to, id: await bridge(from, to, plant, transport) })
        }
      }
      for (const inst of insts) {
        const m = new Map<string, number>()
        counts.set(inst, m)
        const sub = await connectMqtt(inst.mqttUrl!)
        clients.push(sub)
        sub.on('message', (topic, payload) => {
          const key = `${topic} ${payload.toString()}`
          m.set(key, (m.get(key) ?? 0) + 1)
        })
        await sub.subscribeAsync('plant/#', { qos: 1 })
      }
    }, 240_000)

    afterAll(async () => {
      await Promise.all(clients.map((c) => c.endAsync(true)))
      await Promise.all(insts.map((i) => i.stop()))
      await Promise.all([...sniffers.values(), ...mqttSniffers.values()].map((s) => s.close()))
    }, 60_000)

    it('blocks one edge on both ends and delivers every message exactly once everywhere', async () => {
      const states = await settledStates(links)
      await sendAndCount('m', 30)
      expect([...states.values()].sort()).toEqual(['Blocked', 'Forwarding', 'Forwarding'])
    }, 180_000)

    it('falls back on the blocked edge when a tree edge goes away', async () => {
      const states = await settledStates(links)
      const treePair = [...states].find(([, s]) => s === 'Forwarding')![0]
      const removed = links.filter((l) => pair(l) === treePair)
      for (const l of removed) await api(l.from, 'POST', `/api/v1/upstreams/${l.id}/deactivate`)
      const rest = links.filter((l) => pair(l) !== treePair)
      const after = await settledStates(rest)
      expect([...after.values()]).toEqual(['Forwarding', 'Forwarding'])
      await sendAndCount('r', 30)
    }, 180_000)

    if (secure)
      it('sent nothing in the clear: not to the https-only handshake API, not to the MQTT TLS port', () => {
        for (const sniffer of [...sniffers.values(), ...mqttSniffers.values()]) {
          expect(sniffer.tlsConnections()).toBeGreaterThan(0)
          expect(sniffer.plaintext()).toBe('')
        }
      })
  }
)
