import type { Db } from '../../db/client.ts'
import { encodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import { serveJson } from '../common/bus/rpc.ts'
import { StorageError, ValidationError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import {
  STORE_QUEUE,
  storeSubject,
  transitionSubject,
  type StoreApi,
  type StoreVerb,
  type TransitionRecord,
} from './api.ts'
import { replayMachine, verifyMachine } from './audit.ts'
import { toStoreError } from './db-errors.ts'
import { ensureInstance, verifyAdminToken } from './instance.ts'
import * as reads from './reads.ts'
import { createGroupCommit } from './group-commit.ts'
import {
  applyMachineEvent,
  COMMIT_ORDER_LOCK_KEY,
  createRequest,
  createUpstream,
  type StoreHooks,
} from './repo.ts'
import * as v from './validate.ts'

type Handlers = { [V in StoreVerb]: (input: StoreApi[V]['in']) => Promise<StoreApi[V]['out']> }

export interface HandlerDeps {
  bus: Bus
  db: Db
  log: Logger
  hooks?: StoreHooks
}

function optionalStatus(input: unknown): string | undefined {
  const status = v.isObject(input) ? input.status : undefined
  if (status === undefined || status === null) return undefined
  if (typeof status !== 'string' || status.length > 64)
    throw new ValidationError("'status' must be a state name")
  return status
}

function optionalCount(input: unknown, key: string): number | undefined {
  const n = v.isObject(input) ? input[key] : undefined
  if (n === undefined || n === null) return undefined
  if (!Number.isInteger(n) || (n as number) < 0)
    throw new ValidationError(`'${key}' must be a non-negative integer`)
  return n as number
}

/** Every verb of the store API, validated, over the repo. */
export function createHandlers({ bus, db, log, hooks }: HandlerDeps): Handlers {
  const ctx = {
    db,
    queues: new Map(),
    heads: new Map(),
    groupCommit: createGroupCommit({ db, commitOrderLockKey: COMMIT_ORDER_LOCK_KEY }),
    ...(hooks ? { hooks } : {}),
  }
  // Only after commit: a subscriber that sees the record can read it back from the store.
  const publish = (record: TransitionRecord) => {
    try {
      bus.publish(transitionSubject(record.machine, record.machineId), encodeJson(record))
    } catch (err) {
      // Committed but not announced: consumers reconcile from the store (DESIGN §2), so log only.
      log.warn(
        { err, machine: record.machine, id: record.machineId, seq: record.seq },
        'transition not published'
      )
    }
  }
  return {
    'instance.get': async (input) => {
      const token = v.optionalString(v.requireObject(input ?? {}), 'adminToken', 1_024)
      return ensureInstance(db, token === undefined ? {} : { adminToken: token })
    },
    'instance.verifyAdminToken': async (input) => {
      const token = v.optionalString(v.requireObject(input), 'token', 1_024)
      return { ok: token !== undefined && (await verifyAdminToken(db, token)) }
    },
    'upstream.create': async (input) => {
      const record = await createUpstream(ctx, v.requireCreateUpstream(input))
      publish(record)
      return reads.getUpstream(db, record.machineId)
    },
    'upstream.patch': async (input) => {
      const body = v.requireObject(input)
      const patch: {
        lastError?: string | null
        remoteRequestId?: string | null
        withdrawalOwed?: boolean
      } = {}
      for (const key of ['lastError', 'remoteRequestId'] as const) {
        if (body[key] === null) patch[key] = null
        else if (body[key] !== undefined) patch[key] = v.optionalString(body, key) as string
      }
      if (body.withdrawalOwed !== undefined) {
        if (typeof body.withdrawalOwed !== 'boolean')
          throw new ValidationError("'withdrawalOwed' must be a boolean")
        patch.withdrawalOwed = body.withdrawalOwed
      }
      return reads.patchUpstream(db, v.requireId(input), patch)
    },
    'upstream.get': async (input) => reads.getUpstream(db, v.requireId(input)),
    'upstream.list': async (input) => reads.listUpstreams(db, optionalStatus(input)),
    'upstream.credentials': async (input) => reads.upstreamCredentials(db, v.requireId(input)),
    'request.create': async (input) => {
      const { id, record } = await createRequest(ctx, v.requireCreateRequest(input))
      if (record) publish(record)
      return { request: await reads.getRequest(db, id), created: record !== null }
    },
    'request.get': async (input) => reads.getRequest(db, v.requireId(input)),
    'request.list': async (input) => reads.listRequests(db, optionalStatus(input)),
    'request.secretHash': async (input) => reads.requestSecretHash(db, v.requireId(input)),
    'request.authenticate': async (input) => {
      const body = v.requireObject(input)
      const instanceId = v.requireId(input, 'instanceId')
      if (typeof body.secret !== 'string' || body.secret.length === 0) return { ok: false }
      return reads.authenticate(db, instanceId, body.secret)
    },
    event: async (input) => {
      const record = await applyMachineEvent(ctx, v.requireEvent(input))
      publish(record)
      return record
    },
    log: async (input) =>
      reads.readLog(
        db,
        v.requireMachine(v.requireObject(input).machine),
        v.requireId(input),
        optionalCount(input, 'after'),
        optionalCount(input, 'limit')
      ),
    'log.global': async (input) =>
      reads.readGlobalLog(
        db,
        optionalCount(input ?? {}, 'after'),
        optionalCount(input ?? {}, 'limit')
      ),
    replay: async (input) =>
      replayMachine(
        db,
        v.requireMachine(v.requireObject(input).machine),
        v.requireId(input),
        optionalCount(input, 'to')
      ),
    verify: async (input) =>
      verifyMachine(db, v.requireMachine(v.requireObject(input).machine), v.requireId(input)),
  }
}

/** Serve each verb on `store.<verb>` in the queue group, so replicas share the load. */
export async function serveHandlers(
  deps: HandlerDeps,
  handlers: Handlers
): Promise<{ subs: Subscription[]; drain(): Promise<void> }> {
  const subs: Subscription[] = []
  const inflight = new Set<Promise<unknown>>()
  for (const verb of Object.keys(handlers) as StoreVerb[]) {
    const handler = handlers[verb] as (input: unknown) => Promise<unknown>
    const run = async (input: unknown) => {
      try {
        return await handler(input)
      } catch (err) {
        const e = toStoreError(err)
        if (e instanceof StorageError) deps.log.error({ err, verb }, 'binding store database error')
        throw e
      }
    }
    subs.push(
      await serveJson(
        deps.bus,
        storeSubject(verb),
        (input: unknown) => {
          const p = run(input)
          inflight.add(p)
          const forget = () => inflight.delete(p)
          p.then(forget, forget)
          return p
        },
        { queue: STORE_QUEUE }
      )
    )
  }
  // Requests already taken finish before the caller closes the database under them.
  const drain = async () => {
    while (inflight.size) await Promise.allSettled([...inflight])
  }
  return { subs, drain }
}
