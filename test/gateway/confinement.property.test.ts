import fc from 'fast-check'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isWithinAny } from '../../machines/namespace.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { connectMqtt, sleep, type TestGateway } from '../helpers/gateway.ts'
import { acceptedBridge, startGatewayPair, subscribeGranted, type GatewayPair } from './fixture.ts'

const GRANTS = ['acme/plant1', 'acme/plant3/line']
const TOPICS = [
  'acme/plant1',
  'acme/plant1/a',
  'acme/plant1/a/b',
  'acme/plant2/a',
  'acme/plant3/line/x',
  'acme/plant3/other',
  'other/z',
  'plant1/a',
]
const FILTERS = [
  '#',
  '+/#',
  'acme/#',
  'acme/+/a',
  'acme/plant1/#',
  '+/plant1/a',
  'acme/plant3/line/+',
  'acme/plant3/#',
  'other/#',
  'acme/plant1',
]
// The bridge's own ids, a plant client's, and the fabric's bridge session: only the first two work.
const IDS = (bridge: string) => [`${bridge}-1`, `${bridge}-2`, 'plant-client', 'ub-bridge-U9']

type Command =
  | { kind: 'connect'; gateway: 0 | 1; id: number; clean: boolean }
  | { kind: 'disconnect' }
  | { kind: 'subscribe'; filters: string[] }
  | { kind: 'unsubscribe'; filter: string }
  | { kind: 'publish'; gateway: 0 | 1; topic: string; retain: boolean }

const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({
    kind: fc.constant('connect' as const),
    gateway: fc.constantFrom(0 as const, 1 as const),
    // Mostly its own first id, and mostly persistent: where sessions are resumed and queues kept.
    id: fc.constantFrom(0, 0, 0, 1, 2, 3),
    clean: fc.constantFrom(false, false, true),
  }),
  fc.constant({ kind: 'disconnect' as const }),
  fc.record({
    kind: fc.constant('subscribe' as const),
    filters: fc.uniqueArray(fc.constantFrom(...FILTERS), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({ kind: fc.constant('unsubscribe' as const), filter: fc.constantFrom(...FILTERS) }),
  fc.record({
    kind: fc.constant('publish' as const),
    gateway: fc.constantFrom(0 as const, 1 as const),
    topic: fc.constantFrom(...TOPICS),
    retain: fc.boolean(),
  })
)

/**
 * Random sessions of one bridge principal against two gateways that act as one broker: connect
 * (clean or not, its own client ids and others'), subscribe to mixed filters, unsubscribe,
 * disconnect, while a plant client publishes (retained or not) on either gateway. Whatever the
 * sequence, nothing outside the grants reaches the bridge, on any path (live, a resumed queue,
 * retained), and an id outside its namespace is refused with CONNACK 2.
 */
describe('confinement to grants, property-based', () => {
  let pair: GatewayPair
  let busA: Bus
  let gateways: TestGateway[] = []
  const publishers: MqttClient[] = []

  beforeAll(async () => {
    pair = await startGatewayPair('gwprop')
    busA = pair.busA
    gateways = [pair.a, pair.b]
    for (const gw of gateways) publishers.push(await connectMqtt(gw.url))
  })
  afterAll(async () => {
    for (const p of publishers) p.end(true)
    await pair?.close()
  })

  it('never lets a message outside the grants reach the bridge', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 4, maxLength: 24 }), async (commands) => {
        const { instanceId, secret } = await acceptedBridge(busA, GRANTS)
        const ids = IDS(instanceId)
        const received: string[] = []
        let bridge: MqttClient | undefined
        const drop = async () => {
          await bridge?.endAsync(true)
          bridge = undefined
        }
        try {
          for (const c of commands) {
            if (c.kind === 'connect') {
              await drop()
              const clientId = ids[c.id]!
              const mayUse = c.id < 2
              const outcome = await connectMqtt(
                gateways[c.gateway]!.url,
                { clientId, clean: c.clean, username: instanceId, password: secret },
                (client) => client.on('message', (topic) => received.push(topic))
              ).then(
                (client) => ((bridge = client), 0),
                (err: { code?: number }) => err.code ?? -1
              )
              expect(outcome, `CONNECT as ${clientId}`).toBe(mayUse ? 0 : 2)
            } else if (c.kind === 'disconnect') {
              await drop()
            } else if (c.kind === 'subscribe' && bridge) {
              const granted = await subscribeGranted(
                bridge,
                Object.fromEntries(c.filters.map((f) => [f, { qos: 1 as const }]))
              )
              const expected = c.filters.map((f) => (isWithinAny(f, GRANTS) ? 1 : 128))
              expect(granted, `SUBSCRIBE ${c.filters.join(' ')}`).toEqual(expected)
            } else if (c.kind === 'unsubscribe' && bridge) {
              await bridge.unsubscribeAsync(c.filter)
            } else if (c.kind === 'publish') {
              await publishers[c.gateway]!.publishAsync(c.topic, 'm', { qos: 1, retain: c.retain })
            }
          }
          // Whatever waited for a persistent session comes out on a last resume of each own id.
          for (const clientId of ids.slice(0, 2)) {
            await drop()
            bridge = await connectMqtt(
              gateways[0]!.url,
              { clientId, clean: false, username: instanceId, password: secret },
              (client) => client.on('message', (topic) => received.push(topic))
            )
            await sleep(100)
          }
          const outside = received.filter((t) => !isWithinAny(t, GRANTS))
          expect(outside).toEqual([])
        } finally {
          await drop()
        }
      }),
      { numRuns: 100, endOnFailure: true }
    )
  }, 120_000)
})
