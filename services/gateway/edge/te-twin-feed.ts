/**
 * Feeds the binding store's digital twin (`te.entity.*`) from the `te/` messages te-bus.ts has
 * validated: registrations, deregistrations, health, measurement times, alarms, command statuses
 * and twin fragments. Fire-and-forget: MQTT delivery never waits for it and a store failure only
 * counts. Calls for one entity go in order (a registration lands before its first health); at
 * most MAX_IN_FLIGHT calls are outstanding per gateway, past that they are dropped and counted.
 */
import type { Logger } from '../../common/log.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { TeObservation } from '../../contracts/te-entities.ts'
import { TE_ENTITIES_FULL } from '../../contracts/te-entities.ts'
import { UbError } from '../../common/errors.ts'
import {
  isTeProblem,
  validateAlarm,
  validateCommandStatus,
  type TeChannel,
  type TeRegistration,
} from './te-schema.ts'

export const MAX_IN_FLIGHT = 64
/** One measurement time per entity per this many ms reaches the store. */
export const MEASUREMENT_EVERY_MS = 1_000
const THROTTLE_MAX = 10_000 // entities whose last measurement time is remembered

export interface TwinCounters {
  teTwinDropped: number
  teTwinFailed: number
  teTwinRefused: number
}

/** A downstream's entity (te-mounted.ts): whose, and the full topic it is reached at here. */
export interface Downstream {
  downstream: string
  topic?: string
}

export interface TwinFeed {
  register(r: TeRegistration, of?: Downstream): void
  deregister(topicId: string, of?: Downstream): void
  /** A message on a channel of `topicId` that passed validation; '' is a retained clear. */
  observe(topicId: string, channel: TeChannel, payload: string, of?: Downstream): void
  /** Settles when the calls sent so far for `topicId` have (an HTTP write answers after them). */
  settled(topicId: string, of?: Downstream): Promise<void>
  /** Settles when every call sent so far has (tests). */
  idle(): Promise<void>
}

export function createTwinFeed({
  store,
  counters,
  log,
  now = Date.now,
}: {
  store: StoreClient
  counters: TwinCounters
  log: Logger
  now?: () => number
}): TwinFeed {
  const chains = new Map<string, Promise<void>>()
  const lastMeasurement = new Map<string, number>()
  let inFlight = 0

  const send = (key: string, call: () => Promise<unknown>) => {
    if (inFlight >= MAX_IN_FLIGHT) {
      counters.teTwinDropped++
      return
    }
    inFlight++
    const before = chains.get(key) ?? Promise.resolve()
    const done: Promise<void> = before
      .then(call)
      .then(
        () => {},
        (err: unknown) => {
          if (err instanceof UbError && err.code === TE_ENTITIES_FULL) counters.teTwinRefused++
          else counters.teTwinFailed++
          log.debug({ err, entity: key }, 'digital twin not updated')
        }
      )
      .finally(() => {
        inFlight--
        if (chains.get(key) === done) chains.delete(key)
      })
    chains.set(key, done)
  }

  const observe = (o: TeObservation) =>
    send(keyOf(o.topicId, o), () => store.call('te.entity.observe', o))

  return {
    register(r, of) {
      const input = {
        topicId: r.topicId,
        ...(of ? { downstream: of.downstream, ...(of.topic ? { topic: of.topic } : {}) } : {}),
        type: r.type,
        parent: r.parent,
        twin: r.twin,
        ...(r.externalId === undefined ? {} : { externalId: r.externalId }),
        ...(r.healthEndpoint === undefined ? {} : { healthEndpoint: r.healthEndpoint }),
      }
      send(keyOf(r.topicId, input), () => store.call('te.entity.upsert', input))
    },
    deregister(topicId, of) {
      const who = of ? { downstream: of.downstream } : {}
      lastMeasurement.delete(keyOf(topicId, who))
      send(keyOf(topicId, who), () => store.call('te.entity.delete', { topicId, ...who }))
    },
    observe(topicId, channel, payload, of) {
      const who = of ? { downstream: of.downstream } : {}
      const key = keyOf(topicId, who)
      if (channel.kind === 'm' && !channel.meta && payload !== '') {
        const at = now()
        if (at - (lastMeasurement.get(key) ?? -Infinity) < MEASUREMENT_EVERY_MS) return
        lastMeasurement.delete(key) // re-inserted last: the oldest is forgotten first
        if (lastMeasurement.size >= THROTTLE_MAX) lastMeasurement.delete(firstKey(lastMeasurement))
        lastMeasurement.set(key, at)
        return observe({ kind: 'measurement', topicId, at: new Date(at).toISOString(), ...who })
      }
      const o = observation(topicId, channel, payload)
      if (o) observe({ ...o, ...who })
    },
    settled: (topicId, of) => chains.get(keyOf(topicId, of ?? {})) ?? Promise.resolve(),
    async idle() {
      while (chains.size > 0) await Promise.allSettled([...chains.values()])
    },
  }
}

const firstKey = (map: Map<string, unknown>): string => map.keys().next().value ?? ''

/** One chain and one throttle per entity: ours by topic id, a downstream's by both. */
const keyOf = (topicId: string, { downstream }: { downstream?: string }) =>
  downstream ? `${downstream}#${topicId}` : topicId

/** What a non-measurement message tells the twin, or null when nothing. */
export function observation(
  topicId: string,
  channel: TeChannel,
  payload: string
): TeObservation | null {
  switch (channel.kind) {
    case 'status':
      if (channel.component !== 'health') return null
      return { kind: 'health', topicId, status: payload === '' ? null : healthStatus(payload) }
    case 'a': {
      if (channel.meta) return null
      const alarm = validateAlarm(payload)
      if (isTeProblem(alarm)) return null
      return {
        kind: 'alarm',
        topicId,
        alarmType: channel.type,
        alarm:
          alarm.action === 'clear'
            ? null
            : {
                severity: alarm.severity?.slice(0, 64) ?? null,
                text: alarm.text?.slice(0, 1_024) ?? null,
                time: alarm.time === undefined ? null : String(alarm.time).slice(0, 64),
              },
      }
    }
    case 'cmd': {
      if (channel.id === undefined) return null
      const cmd = validateCommandStatus(payload)
      if (isTeProblem(cmd)) return null
      const status = cmd.action === 'clear' ? null : cmd.status
      return { kind: 'command', topicId, command: `${channel.operation}/${channel.id}`, status }
    }
    case 'twin': {
      const value = payload === '' ? null : parseJson(payload)
      return value === undefined
        ? null
        : { kind: 'twin', topicId, fragment: channel.fragment, value }
    }
    default:
      return null
  }
}

/** `{"status":"up",…}`; anything else is reported as it came, so a plain `up` still shows. */
function healthStatus(payload: string): string {
  const body = parseJson(payload)
  const status = (body as { status?: unknown } | undefined)?.status
  return (typeof status === 'string' ? status : payload).slice(0, 64)
}

function parseJson(payload: string): unknown {
  try {
    return JSON.parse(payload) as unknown
  } catch {
    return undefined
  }
}
