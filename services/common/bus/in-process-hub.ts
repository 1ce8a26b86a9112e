import { BusTimeoutError, NoRespondersError } from '../errors.ts'
import {
  throwIfErrorReply,
  validateSubject,
  type BusMessage,
  type Headers,
  type Subscription,
} from './bus.ts'
import type { InProcessKvStore } from './in-process-kv.ts'
import { createSubjectIndex, type SubjectIndex } from './subject-index.ts'

export type ReplyFn = (reply: BusMessage) => void

export interface InProcessSub {
  prefix: string
  pattern: string
  tokens: string[]
  queue: string | undefined
  active: boolean
  /** Order of subscribing: matches are handed out in it, as the scan they replace did. */
  seq: number
  deliver(msg: BusMessage, reply: ReplyFn | undefined): void
  /** What `subscribe` handed out for it. */
  handle: Subscription
}

/** What buses built on one hub share, as buses on one NATS server do. */
export interface InProcessHub {
  subs: Set<InProcessSub>
  /** The same subscriptions by subject (subject-index.ts). */
  index: SubjectIndex<InProcessSub>
  nextSeq: number
  /** Moves on whenever a subscription is added or removed: what `reachesBeyond` remembers. */
  version: number
  /** Round-robin position per queue group (`pattern \0 queue`). */
  cursors: Map<string, number>
  buckets: Map<string, InProcessKvStore>
}

export function createInProcessHub(): InProcessHub {
  return {
    subs: new Set(),
    index: createSubjectIndex(),
    nextSeq: 0,
    version: 0,
    cursors: new Map(),
    buckets: new Map(),
  }
}

/** Hand a message to every plain subscriber and one member of each queue group; returns how many. */
export function route(
  hub: InProcessHub,
  prefix: string,
  subject: string,
  data: Uint8Array,
  headers?: Headers,
  reply?: ReplyFn
): number {
  const tokens = `${prefix}.${subject}`.split('.')
  const groups = new Map<string, InProcessSub[]>()
  const targets: InProcessSub[] = []
  const matched = hub.index.match(tokens)
  if (matched.length > 1) matched.sort((a, b) => a.seq - b.seq)
  for (const sub of matched) {
    if (sub.queue === undefined) targets.push(sub)
    else {
      const key = `${sub.pattern}\0${sub.queue}`
      groups.set(key, [...(groups.get(key) ?? []), sub])
    }
  }
  for (const [key, members] of groups) {
    const at = hub.cursors.get(key) ?? 0
    hub.cursors.set(key, at + 1)
    targets.push(members[at % members.length]!)
  }
  for (const sub of targets) {
    const msg: BusMessage = {
      subject: tokens.slice(sub.prefix.split('.').length).join('.'),
      data: data.slice(),
    }
    if (headers) msg.headers = { ...headers }
    queueMicrotask(() => sub.active && sub.deliver(msg, reply))
  }
  return targets.length
}

/** Put a subscription on the hub; `mine` holds the owning bus's, so its close takes them off. */
export function addSubscription(
  hub: InProcessHub,
  mine: Set<InProcessSub>,
  prefix: string,
  subject: string,
  queue: string | undefined,
  deliver: InProcessSub['deliver']
): Subscription {
  validateSubject(subject, { wildcards: true })
  const pattern = `${prefix}.${subject}`
  const sub: InProcessSub = {
    prefix,
    pattern,
    tokens: pattern.split('.'),
    queue,
    active: true,
    seq: hub.nextSeq++,
    deliver,
    handle: {
      async unsubscribe() {
        sub.active = false
        hub.subs.delete(sub)
        hub.index.remove(sub.tokens, sub)
        hub.version++
        mine.delete(sub)
      },
    },
  }
  hub.subs.add(sub)
  hub.index.add(sub.tokens, sub)
  hub.version++
  mine.add(sub)
  return sub.handle
}

/**
 * Whether `route` would hand a message on this subject to a subscription not in `own`. The last
 * answer is kept until the subscriptions change: a gateway asks once per run of one topic.
 */
export function createReachesBeyond(hub: InProcessHub, prefix: string) {
  let last:
    | {
        subject: string
        own: ReadonlySet<Subscription>
        size: number
        version: number
        heard: boolean
      }
    | undefined
  return (subject: string, own: ReadonlySet<Subscription>): boolean => {
    // `own` is the caller's live set: it grows after the hub learned of the subscription.
    if (
      last?.subject === subject &&
      last.own === own &&
      last.size === own.size &&
      last.version === hub.version
    )
      return last.heard
    let heard = false
    for (const sub of hub.index.match(`${prefix}.${subject}`.split('.')))
      if (!own.has(sub.handle)) {
        heard = true
        break
      }
    last = { subject, own, size: own.size, version: hub.version, heard }
    return heard
  }
}

/** Take every subscription in `mine` off the hub: nothing more reaches them. */
export function removeSubscriptions(hub: InProcessHub, mine: Set<InProcessSub>): void {
  for (const sub of mine) {
    sub.active = false
    hub.subs.delete(sub)
    hub.index.remove(sub.tokens, sub)
  }
  hub.version++
  mine.clear()
}

/** Route a request with a reply function; the first reply wins, the timeout rejects. */
export function requestOnHub(
  hub: InProcessHub,
  prefix: string,
  subject: string,
  data: Uint8Array,
  timeoutMs: number,
  headers: Headers | undefined
): Promise<BusMessage> {
  return new Promise<BusMessage>((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      done = true
      reject(new BusTimeoutError(subject, timeoutMs))
    }, timeoutMs)
    const onReply: ReplyFn = (reply) => {
      if (done) return // a late or second reply, as NATS drops it
      done = true
      clearTimeout(timer)
      try {
        resolve(throwIfErrorReply({ ...reply, subject, data: reply.data.slice() }))
      } catch (err) {
        reject(err)
      }
    }
    // Like NATS no-responders: fail at once when no subscription matches.
    if (route(hub, prefix, subject, data, headers, onReply) === 0) {
      clearTimeout(timer)
      reject(new NoRespondersError(subject))
    }
  })
}
