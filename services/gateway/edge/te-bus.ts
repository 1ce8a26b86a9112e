/**
 * The gateway as a thin-edge.io MQTT bus. Every PUBLISH a device sends under the topic root is
 * checked against the `te/` schema; like thin-edge (its broker delivers everything, its mapper
 * reports on `te/errors`), a malformed message is still delivered as published, and a line on
 * `<root>/errors` names the topic and the problem. An empty retained registration deregisters
 * the entity: its retained messages and those of its descendants are cleared. An unregistered
 * default-scheme entity that publishes gets its implied registration, as thin-edge does.
 *
 * Observed on aedes' `publish` event, which fires once, on the gateway the client is connected
 * to, after the retained store; broker-internal publishes (client null: this module's own, and
 * other gateways' traffic, which never passes here) are not looked at, so nothing loops.
 */
import type { Readable } from 'node:stream'
import type { Aedes, AedesPublishPacket, Client } from 'aedes'
import { UbError } from '../../common/errors.ts'
import type { Logger } from '../../common/log.ts'
import { TE_BUS_OFF, type TeWrite } from '../../contracts/te-publish.ts'
import {
  autoRegistration,
  errorMessage,
  isTeProblem,
  parseRegistration,
  parseTeTopic,
  validateAlarm,
  validateCommandStatus,
  validateEvent,
  validateMeasurement,
  type TeChannel,
  type TeProblem,
  type TeRegistration,
} from './te-schema.ts'
import type { TwinFeed } from './te-twin-feed.ts'

export interface TeBusOptions {
  aedes: Aedes
  /** Topic root, e.g. `te`; empty = off. */
  root: string
  autoRegister: boolean
  /** aedes' retained read: this gateway's copy of the retained store, by MQTT filter. */
  persistence: { createRetainedStream(filter: string): Readable }
  /** Devices are checked; bridges and internal links carry what another fabric checked. */
  kindOf: (client: Client) => string | undefined
  counters: { teErrors: number }
  log: Logger
  /** The store's digital twin, fed with what passed the checks (te-twin-feed.ts); absent = off. */
  twin?: TwinFeed
  /** A command ended (successful or failed) naming a file by its tedgeUrl (services/files). */
  onCommandEnded?: (ended: { topic: string; tedgeUrl: string }) => void
}

interface Packet {
  topic: string
  payload: Buffer
  retain: boolean
}

export interface TeBus {
  detach(): void
  /**
   * The HTTP entity API's writes (contracts/te-publish.ts): checked as a client's message would
   * be, published retained with QoS 1 through the broker, then handled as a client's (te-bus
   * skips broker-internal publishes), so the twin is fed and a deregistration cascades. Resolves
   * once the twin's store calls for them settled, or after WRITE_SETTLE_MS.
   */
  publish(messages: TeWrite[]): Promise<void>
}

// Auto-registrations published and possibly not yet in the retained store, with when; bounded.
const PENDING_MS = 10_000
const PENDING_MAX = 10_000
const WRITE_SETTLE_MS = 5_000

/** Start watching. */
export function attachTeBus(options: TeBusOptions): TeBus {
  const { aedes, root, log } = options
  if (!root)
    return {
      detach: () => {},
      publish: () =>
        Promise.reject(new UbError(TE_BUS_OFF, 'the thin-edge.io bus is off (teRoot)')),
    }
  const prefix = `${root}/`
  const pending = new Map<string, number>()
  const onPublish = (packet: AedesPublishPacket, client: Client | null) => {
    // Hot path for every other topic: one startsWith.
    if (!client || !packet.topic.startsWith(prefix)) return
    const kind = options.kindOf(client)
    if (kind === 'bridge' || kind === 'internal') return
    const p = { topic: packet.topic, payload: Buffer.from(packet.payload), retain: packet.retain }
    handle(options, p, pending).catch((err: unknown) =>
      log.warn({ err, topic: p.topic }, 'could not process a thin-edge.io message')
    )
  }
  aedes.on('publish', onPublish)
  return {
    detach: () => void aedes.removeListener('publish', onPublish),
    publish: (messages) => publishWrites(options, messages, pending),
  }
}

async function publishWrites(
  o: TeBusOptions,
  messages: TeWrite[],
  pending: Map<string, number>
): Promise<void> {
  const packets = messages.map((m) => checkWrite(o.root, m))
  const touched = new Set<string>()
  for (const p of packets) {
    await publish(o.aedes, p.topic, p.payload, true, 1)
    await handle(o, p, pending)
    touched.add(
      p.topic
        .slice(o.root.length + 1)
        .split('/')
        .slice(0, 4)
        .join('/')
    )
  }
  const settled = Promise.all([...touched].map((id) => o.twin?.settled(id)))
  let timer: NodeJS.Timeout | undefined
  const late = new Promise((resolve) => (timer = setTimeout(resolve, WRITE_SETTLE_MS)))
  await Promise.race([settled, late]).finally(() => clearTimeout(timer))
}

/** Only registrations and twin fragments, each as the MQTT path would accept it. */
function checkWrite(root: string, { topic, payload }: TeWrite): Packet {
  const full = `${root}/${topic}`
  const parsed = parseTeTopic(full, root)
  const refuse = (problem: string) => new UbError('invalid_request', problem)
  if (parsed === null) throw refuse(`"${full}" is not an entity topic`)
  if (isTeProblem(parsed)) throw refuse(parsed.problem)
  if (!parsed.channel) {
    const registration = parseRegistration(parsed.entity.topicId, payload)
    if (isTeProblem(registration)) throw refuse(registration.problem)
  } else if (parsed.channel.kind !== 'twin') {
    throw refuse(`"${full}": only registrations and twin fragments are written this way`)
  } else if (payload !== '') {
    try {
      JSON.parse(payload)
    } catch {
      throw refuse(`"${full}": a twin fragment is JSON`)
    }
  }
  return { topic: full, payload: Buffer.from(payload), retain: true }
}

async function handle(o: TeBusOptions, p: Packet, pending: Map<string, number>): Promise<void> {
  const parsed = parseTeTopic(p.topic, o.root)
  if (parsed === null) return // `<root>/errors` itself
  if (isTeProblem(parsed)) return reportError(o, p.topic, parsed)
  const { entity, channel } = parsed
  const payload = p.payload.toString('utf8')
  if (!channel) {
    const registration = parseRegistration(entity.topicId, payload)
    if (isTeProblem(registration)) return reportError(o, p.topic, registration)
    if (registration.action === 'register') o.twin?.register(registration.registration)
    if (registration.action === 'deregister' && p.retain) {
      o.twin?.deregister(entity.topicId)
      for (const id of await deregister(o, entity.topicId)) pending.delete(id)
    }
    return
  }
  if (payload === '') {
    // Clearing a retained message: nothing to check or register; an alarm or command ends.
    if (p.retain) o.twin?.observe(entity.topicId, channel, payload)
    return
  }
  if (o.autoRegister) await registerIfUnknown(o, entity.topicId, pending)
  const problem = checkPayload(channel, payload, p.retain)
  if (problem) return reportError(o, p.topic, problem)
  o.twin?.observe(entity.topicId, channel, payload)
  if (channel.kind === 'cmd' && channel.id !== undefined && o.onCommandEnded)
    noteCommandEnd(p.topic, payload, o.onCommandEnded)
}

const ENDED = new Set(['successful', 'failed'])

/** A command that ended with a tedgeUrl: its file may go (checkPayload parsed it already). */
function noteCommandEnd(
  topic: string,
  payload: string,
  onEnded: NonNullable<TeBusOptions['onCommandEnded']>
): void {
  const body = JSON.parse(payload) as { status?: unknown; tedgeUrl?: unknown }
  if (ENDED.has(body.status as string) && typeof body.tedgeUrl === 'string')
    onEnded({ topic, tedgeUrl: body.tedgeUrl })
}

/** The payload check of a channel (the registration aside); null when it passes. */
export function checkPayload(
  channel: TeChannel,
  payload: string,
  retained: boolean
): TeProblem | null {
  let result: object
  switch (channel.kind) {
    case 'm':
      if (channel.meta) return null
      result = validateMeasurement(payload)
      break
    case 'e':
      if (channel.meta) return null
      result = validateEvent(payload)
      break
    case 'a':
      if (channel.meta) return null
      result = validateAlarm(payload, { retained })
      break
    case 'cmd':
      if (channel.id === undefined) return null
      result = validateCommandStatus(payload)
      break
    default:
      return null
  }
  return isTeProblem(result) ? result : null
}

function reportError(o: TeBusOptions, topic: string, problem: TeProblem): Promise<void> {
  o.counters.teErrors++
  const line = errorMessage(topic, problem, o.root)
  return publish(o.aedes, line.topic, Buffer.from(line.payload), false)
}

function publish(
  aedes: Aedes,
  topic: string,
  payload: Buffer,
  retain: boolean,
  qos: 0 | 1 = 0
): Promise<void> {
  return new Promise((resolve, reject) =>
    aedes.publish({ cmd: 'publish', topic, payload, qos, retain, dup: false }, (err) =>
      err ? reject(err) : resolve()
    )
  )
}

async function retained(o: TeBusOptions, filter: string): Promise<Packet[]> {
  return (await o.persistence.createRetainedStream(filter).toArray()) as Packet[]
}

/** The registration message thin-edge itself publishes for an auto-registered entity. */
function registrationPayload(r: TeRegistration): Buffer {
  const body: Record<string, unknown> = { '@type': r.type }
  if (r.parent !== null) body['@parent'] = r.parent
  if (r.externalId !== undefined) body['@id'] = r.externalId
  return Buffer.from(JSON.stringify({ ...body, ...r.twin }))
}

async function registerIfUnknown(
  o: TeBusOptions,
  topicId: string,
  pending: Map<string, number>
): Promise<void> {
  const implied = autoRegistration(topicId)
  if (!implied?.length) return
  const now = Date.now()
  for (const [id, at] of pending) if (now - at > PENDING_MS) pending.delete(id)
  for (const r of implied) {
    if (pending.has(r.topicId)) continue
    const topic = `${o.root}/${r.topicId}`
    if ((await retained(o, topic)).length > 0) continue
    if (pending.size >= PENDING_MAX) pending.clear()
    pending.set(r.topicId, now)
    // Parents first: a service's registration names a device already registered.
    await publish(o.aedes, topic, registrationPayload(r), true)
    o.twin?.register(r) // our own publish is not observed (client null)
  }
}

/**
 * Clear, by publishing empty retained messages through the broker (so every gateway and every
 * bridge sees it), whatever is retained under the entity and under each descendant: entities
 * whose retained registration's `@parent` chain leads to it. Returns the entities gone.
 */
async function deregister(o: TeBusOptions, topicId: string): Promise<Set<string>> {
  const all = await retained(o, `${o.root}/#`)
  const children = new Map<string, string[]>()
  for (const { topic, payload } of all) {
    const parsed = parseTeTopic(topic, o.root)
    if (!parsed || isTeProblem(parsed) || parsed.channel) continue
    const reg = parseRegistration(parsed.entity.topicId, payload.toString('utf8'))
    if (isTeProblem(reg) || reg.action !== 'register' || reg.registration.parent === null) continue
    const siblings = children.get(reg.registration.parent) ?? []
    siblings.push(reg.registration.topicId)
    children.set(reg.registration.parent, siblings)
  }
  const gone = new Set([topicId])
  for (const id of gone) for (const child of children.get(id) ?? []) gone.add(child) // cycle-safe
  // By the four identifier levels, so a retained message on a malformed channel goes too.
  const prefix = `${o.root}/`
  const clear = all.filter(({ topic }) => {
    const levels = topic.slice(prefix.length).split('/')
    return levels.length >= 4 && gone.has(levels.slice(0, 4).join('/'))
  })
  for (const { topic } of clear) await publish(o.aedes, topic, Buffer.alloc(0), true)
  o.log.info(
    { entity: topicId, entities: gone.size, cleared: clear.length },
    'thin-edge.io entity deregistered'
  )
  return gone
}
