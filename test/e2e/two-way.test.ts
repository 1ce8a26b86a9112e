import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { bridge, until } from '../helpers/bridging.ts'
import { api, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * Issue 4, "no echo, no loop": two real instances bridged both ways on overlapping namespaces.
 * Without split horizon every message would come back over the other bridge and circle forever.
 */
describe('two instances bridged both ways on overlapping namespaces', () => {
  let a: Instance
  let b: Instance
  const clients: MqttClient[] = []
  let aToB = ''
  let bToA = ''

  beforeAll(async () => {
    ;[a, b] = await Promise.all([startInstance(), startInstance()])
    const both = [{ source: 'plant', target: 'plant' }]
    aToB = await bridge(a, b, both)
    bToA = await bridge(b, a, both)
    // Split horizon rests on each link knowing its peer: wait until both links forward.
    for (const [inst, id, peer] of [
      [a, aToB, b],
      [b, bToA, a],
    ] as const) {
      await until(
        `link ${id} forwarding with its peer known: ${id}`,
        async () => {
          const detail = await api(inst, 'GET', `/api/v1/upstreams/${id}`)
          const link = detail.link
          if (process.env.DEBUG_TWO_WAY) console.log(JSON.stringify(detail))
          return link?.state === 'Forwarding' && link.peerInstanceId === peer.instanceId
            ? true
            : undefined
        },
        20_000
      )
    }
  }, 120_000)

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await Promise.all([a?.stop(), b?.stop()])
  })

  it('delivers every message exactly once on both sides', async () => {
    const counts = { a: new Map<string, number>(), b: new Map<string, number>() }
    for (const [name, inst] of [
      ['a', a],
      ['b', b],
    ] as const) {
      const sub = await connectMqtt(inst.mqttUrl!)
      clients.push(sub)
      sub.on('message', (topic, payload) => {
        const key = `${topic} ${payload.toString()}`
        counts[name].set(key, (counts[name].get(key) ?? 0) + 1)
      })
      await sub.subscribeAsync('plant/#', { qos: 1 })
    }
    const pubA = await connectMqtt(a.mqttUrl!)
    const pubB = await connectMqtt(b.mqttUrl!)
    clients.push(pubA, pubB)
    const sent: string[] = []
    for (let i = 0; i < 50; i++) {
      await pubA.publishAsync('plant/a/temp', `a${i}`, { qos: 1 })
      await pubB.publishAsync('plant/b/temp', `b${i}`, { qos: 1 })
      sent.push(`plant/a/temp a${i}`, `plant/b/temp b${i}`)
    }
    await until('every message on both sides', async () =>
      sent.every((k) => counts.a.has(k) && counts.b.has(k)) ? true : undefined
    )
    // A message that looped would show up again within a round trip or two: give it time.
    await new Promise((r) => setTimeout(r, 1_500))
    const copies = (m: Map<string, number>) => sent.map((k) => m.get(k) ?? 0)
    expect(copies(counts.a)).toEqual(sent.map(() => 1))
    expect(copies(counts.b)).toEqual(sent.map(() => 1))
    expect([...counts.a.keys()].sort()).toEqual([...sent].sort())
  }, 60_000)
})
