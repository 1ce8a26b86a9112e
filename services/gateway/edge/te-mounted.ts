/**
 * The thin-edge.io entities of downstreams, fed to our digital twin from what their bridges
 * mirror into their mounts (te-mounts.ts). A message counts only when the client that published
 * it is the bridge of the downstream owning the mount (the principal, never the topic alone);
 * it is checked with the `te/` rules (te-schema.ts) and fed as that downstream's entity, keyed by
 * (downstream, topic id), so two downstreams' `device/child01//` and ours never meet. Nothing is
 * published back: the downstream's own gateway reported problems and cleared retained messages
 * where they were published, and its bridge carries the clears here.
 */
import type { Readable } from 'node:stream'
import type { Aedes, AedesPublishPacket, Client } from 'aedes'
import type { Logger } from '../../common/log.ts'
import type { TeMount } from '../../contracts/te-entities.ts'
import { checkPayload } from './te-bus.ts'
import { isTeProblem, parseRegistration, parseTeTopic } from './te-schema.ts'
import { watchTeMounts, type MountTable } from './te-mounts.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { TwinFeed } from './te-twin-feed.ts'

/** A backfill waits for the twin's calls every this many messages (the feed drops past 64). */
const BACKFILL_BATCH = 32
/**
 * The link as this gateway sees it, a service of the downstream's main device in its tree here:
 * `up` while the downstream's bridge is connected to this gateway, `down` once it is not. (The
 * link's own `ub-bridge-<id>` health never comes up: the link does not receive what it publishes.)
 */
const LINK_SERVICE = 'device/main/service/ub-link'
/** Retained topics remembered as published by a bridge under no mount yet (see attachMountedTe). */
const RETAINED_SEEN_MAX = 10_000

interface MountedTeOptions {
  aedes: Aedes
  mounts: MountTable
  twin: TwinFeed
  /** The instance id of a downstream's bridge principal; undefined for any other client. */
  bridgeOf: (client: Client) => string | undefined
  persistence: { createRetainedStream(filter: string): Readable }
  log: Logger
  /** A retained topic was forgotten past RETAINED_SEEN_MAX: a later backfill will not read it. */
  onForgotten?: () => void
}

interface MountedTe {
  detach(): void
  /**
   * Feed the retained messages under a mount that appeared after they came (its downstream's
   * bridge replayed them before the mount was declared), those this gateway saw that bridge
   * publish only: registrations first, then the rest.
   */
  backfill(instanceId: string, mount: TeMount): Promise<void>
}

interface Located {
  mount: TeMount
  /** The topic on the downstream, under a root named `te`. */
  teTopic: string
}

/** Which of `mounts` `topic` lies under, and what it is on the downstream. */
function locate(mounts: readonly TeMount[], topic: string): Located | null {
  for (const mount of mounts) {
    if (!topic.startsWith(mount.target) || topic[mount.target.length] !== '/') continue
    const rest = topic.slice(mount.target.length + 1)
    return { mount, teTopic: `te/${mount.path ? `${mount.path}/` : ''}${rest}` }
  }
  return null
}

/** Where a downstream's entity is reached here: its topic id under the mount's target. */
function mountedTopic(mount: TeMount, topicId: string): string {
  return `${mount.target}/${mount.path ? topicId.slice(mount.path.length + 1) : topicId}`
}

/** Feed one message of downstream `instanceId` found under `at`; false when it fed nothing. */
function feedMounted(
  twin: TwinFeed,
  instanceId: string,
  at: Located,
  payload: string,
  retain: boolean
): boolean {
  const parsed = parseTeTopic(at.teTopic, 'te')
  if (parsed === null || isTeProblem(parsed)) return false
  const { entity, channel } = parsed
  const of = { downstream: instanceId, topic: mountedTopic(at.mount, entity.topicId) }
  if (!channel) {
    const registration = parseRegistration(entity.topicId, payload)
    if (isTeProblem(registration)) return false
    if (registration.action === 'register') twin.register(registration.registration, of)
    else if (retain) twin.deregister(entity.topicId, of)
    else return false
    return true
  }
  if (payload === '') {
    if (retain) twin.observe(entity.topicId, channel, payload, of)
    return retain
  }
  if (checkPayload(channel, payload, retain)) return false
  twin.observe(entity.topicId, channel, payload, of)
  return true
}

function attachMountedTe(o: MountedTeOptions): MountedTe {
  // Retained topics a bridge published under no mount it had yet, by topic: its instance id. A
  // backfill reads only these, so what anyone else published under a mount is never taken as
  // the downstream's. Bounded: the oldest is forgotten first (counted).
  const retainedBy = new Map<string, string>()
  const remember = (topic: string, instanceId: string, cleared: boolean) => {
    retainedBy.delete(topic)
    if (cleared) return
    if (retainedBy.size >= RETAINED_SEEN_MAX) {
      retainedBy.delete(retainedBy.keys().next().value!)
      o.onForgotten?.()
    }
    retainedBy.set(topic, instanceId)
  }
  const onPublish = (packet: AedesPublishPacket, client: Client | null) => {
    if (!client) return
    const instanceId = o.bridgeOf(client)
    if (instanceId === undefined) {
      if (packet.retain && retainedBy.size > 0) retainedBy.delete(packet.topic) // someone else's now
      return
    }
    const mounts = o.mounts.of(instanceId)
    const at = mounts.length === 0 ? null : locate(mounts, packet.topic)
    if (at) feedMounted(o.twin, instanceId, at, packet.payload.toString(), packet.retain)
    else if (packet.retain) remember(packet.topic, instanceId, packet.payload.length === 0)
  }
  const link = watchLinks(o)
  o.aedes.on('publish', onPublish)
  return {
    detach: () => (link.detach(), void o.aedes.removeListener('publish', onPublish)),
    async backfill(instanceId, mount) {
      let fed = 0
      for (const registrations of [true, false]) {
        const stream = o.persistence.createRetainedStream(`${mount.target}/#`)
        for await (const p of stream as AsyncIterable<{ topic: string; payload: Buffer }>) {
          if (retainedBy.get(p.topic) !== instanceId) continue
          const at = locate([mount], p.topic)
          if (!at) continue
          const levels = at.teTopic.split('/').length
          if ((levels === 5) !== registrations) continue // `te` + 4 segments: the registration
          retainedBy.delete(p.topic) // read once: under its mount it is fed live from now on
          if (!feedMounted(o.twin, instanceId, at, p.payload.toString('utf8'), true)) continue
          if (++fed % BACKFILL_BATCH === 0) await o.twin.idle()
        }
      }
      link.mounted(instanceId)
      await o.twin.idle()
      o.log.info({ downstream: instanceId, mount: mount.target, fed }, 'thin-edge.io mount read')
    },
  }
}

/** Each downstream's link health (LINK_SERVICE) from its bridge's connections to this gateway. */
function watchLinks(o: MountedTeOptions) {
  const connections = new Map<string, number>() // bounded by the gateway's connections
  const report = (instanceId: string, status: 'up' | 'down') => {
    const mount = o.mounts.of(instanceId).find((m) => m.path === '')
    if (!mount) return
    const of = { downstream: instanceId, topic: mountedTopic(mount, LINK_SERVICE) }
    const service = { topicId: LINK_SERVICE, type: 'service' as const, parent: 'device/main//' }
    o.twin.register({ ...service, twin: { name: 'ub-link' } }, of)
    o.twin.observe(
      LINK_SERVICE,
      { kind: 'status', component: 'health' },
      `{"status":"${status}"}`,
      of
    )
  }
  const onReady = (client: Client) => {
    const id = o.bridgeOf(client)
    if (id === undefined) return
    connections.set(id, (connections.get(id) ?? 0) + 1)
    report(id, 'up')
  }
  const onGone = (client: Client) => {
    const id = o.bridgeOf(client)
    if (id === undefined || !connections.has(id)) return
    const left = connections.get(id)! - 1
    if (left > 0) return void connections.set(id, left)
    connections.delete(id)
    report(id, 'down')
  }
  o.aedes.on('clientReady', onReady)
  o.aedes.on('clientDisconnect', onGone)
  return {
    /** A mount appeared: a bridge already connected shows up now. */
    mounted: (instanceId: string) => connections.has(instanceId) && report(instanceId, 'up'),
    detach() {
      o.aedes.removeListener('clientReady', onReady)
      o.aedes.removeListener('clientDisconnect', onGone)
    },
  }
}

/** The mount table and the feed together, as the broker runs them; `close` stops both. */
export function watchDownstreamsTe(
  o: Omit<MountedTeOptions, 'mounts'> & { store: StoreClient; refreshMs?: number }
): { close(): void } {
  const mounts = watchTeMounts({
    store: o.store,
    ...(o.refreshMs === undefined ? {} : { everyMs: o.refreshMs }),
    onAdded: (instanceId, mount) =>
      void mounted.backfill(instanceId, mount).catch((err: unknown) => {
        o.log.warn({ err, downstream: instanceId }, 'thin-edge.io mount not read')
      }),
    log: o.log,
  })
  const mounted = attachMountedTe({ ...o, mounts })
  return { close: () => (mounts.close(), mounted.detach()) }
}
