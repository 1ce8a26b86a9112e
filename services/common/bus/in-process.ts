import { BusTimeoutError, NoRespondersError, UbError } from '../errors.ts'
import {
  answerRequest,
  callSafely,
  DEFAULT_REQUEST_TIMEOUT_MS,
  subjectMatches,
  throwIfErrorReply,
  validateSubject,
  type Bus,
  type BusLogger,
  type BusMessage,
  type Headers,
  type Subscription,
} from './bus.ts'
import { openInProcessKv, type InProcessKvStore } from './in-process-kv.ts'

type ReplyFn = (reply: BusMessage) => void

interface InProcessSub {
  prefix: string
  pattern: string
  tokens: string[]
  queue: string | undefined
  active: boolean
  deliver(msg: BusMessage, reply: ReplyFn | undefined): void
}

/** What buses built on one hub share, as buses on one NATS server do. */
export interface InProcessHub {
  subs: Set<InProcessSub>
  /** Round-robin position per queue group (`pattern \0 queue`). */
  cursors: Map<string, number>
  buckets: Map<string, InProcessKvStore>
}

export function createInProcessHub(): InProcessHub {
  return { subs: new Set(), cursors: new Map(), buckets: new Map() }
}

export interface InProcessBusOptions {
  prefix?: string
  /** Share one hub between buses to model several processes on one server. */
  hub?: InProcessHub
  log?: BusLogger
  /**
   * Keep KV buckets on disk in this folder (the embedded default), so retained messages,
   * persistent sessions and their queues outlive the process as they outlive a restart on NATS.
   */
  dataDir?: string
  /** Rewrite a bucket's file past this many bytes when mostly dead (default 64 MiB); for tests. */
  journalRewriteBytes?: number
}

/**
 * In-process bus for the embedded default. Delivery is asynchronous (a microtask per message, so
 * per-publisher order holds) and every receiver gets its own copy of the payload.
 */
export function createInProcessBus({
  prefix = 'ub',
  hub,
  log,
  dataDir,
  journalRewriteBytes,
}: InProcessBusOptions = {}): Bus {
  validateSubject(prefix)
  const ownsHub = hub === undefined
  const world = hub ?? createInProcessHub()
  const mine = new Set<InProcessSub>()
  const watches = new Set<Subscription>()
  let closed = false

  function checkOpen(): void {
    if (closed) throw new UbError('bus_closed', 'the bus is closed')
  }

  /** Hand a message to every plain subscriber and one member of each queue group. */
  function route(subject: string, data: Uint8Array, headers?: Headers, reply?: ReplyFn): number {
    const tokens = `${prefix}.${subject}`.split('.')
    const groups = new Map<string, InProcessSub[]>()
    const targets: InProcessSub[] = []
    for (const sub of world.subs) {
      if (!subjectMatches(sub.tokens, tokens)) continue
      if (sub.queue === undefined) targets.push(sub)
      else {
        const key = `${sub.pattern}\0${sub.queue}`
        groups.set(key, [...(groups.get(key) ?? []), sub])
      }
    }
    for (const [key, members] of groups) {
      const at = world.cursors.get(key) ?? 0
      world.cursors.set(key, at + 1)
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

  function add(
    subject: string,
    queue: string | undefined,
    deliver: InProcessSub['deliver']
  ): Subscription {
    checkOpen()
    validateSubject(subject, { wildcards: true })
    const pattern = `${prefix}.${subject}`
    const sub: InProcessSub = {
      prefix,
      pattern,
      tokens: pattern.split('.'),
      queue,
      active: true,
      deliver,
    }
    world.subs.add(sub)
    mine.add(sub)
    return {
      async unsubscribe() {
        sub.active = false
        world.subs.delete(sub)
        mine.delete(sub)
      },
    }
  }

  const bus: Bus = {
    prefix,
    kind: 'memory',
    publish(subject, data, headers) {
      checkOpen()
      validateSubject(subject)
      route(subject, data, headers)
    },
    async subscribe(subject, handler, { queue } = {}) {
      return add(subject, queue, (msg) => callSafely(log, msg.subject, () => handler(msg)))
    },
    request(subject, data, { timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS, headers } = {}) {
      checkOpen()
      validateSubject(subject)
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
        if (route(subject, data, headers, onReply) === 0) {
          clearTimeout(timer)
          reject(new NoRespondersError(subject))
        }
      })
    },
    async serve(subject, handler, { queue } = {}) {
      return add(subject, queue, (msg, reply) => {
        void answerRequest(handler, msg, log).then((r) => reply?.({ subject, ...r }))
      })
    },
    async kv(bucket, options = {}) {
      checkOpen()
      return openInProcessKv(world.buckets, prefix, bucket, options, watches, {
        log,
        dataDir,
        rewriteAtBytes: journalRewriteBytes,
      })
    },
    async flush() {
      // Everything published so far is already queued as microtasks ahead of this one.
      await new Promise<void>((resolve) => queueMicrotask(resolve))
    },
    async close() {
      if (closed) return
      closed = true
      for (const sub of mine) {
        sub.active = false
        world.subs.delete(sub)
      }
      mine.clear()
      await Promise.all([...watches].map((w) => w.unsubscribe()))
      if (ownsHub) {
        for (const b of world.buckets.values()) {
          clearInterval(b.sweep)
          b.journal?.close()
        }
      }
    },
    [Symbol.asyncDispose]() {
      return bus.close()
    },
  }
  return bus
}
