import type { Db } from '../../db/client.ts'
import { encodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import { serveJson } from '../common/bus/rpc.ts'
import { StorageError, ValidationError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import {
  describeIssues,
  STORE_INPUTS,
  STORE_QUEUE,
  storeSubject,
  transitionSubject,
  type StoreApi,
  type StoreInput,
  type StoreVerb,
  type TransitionRecord,
} from '../contracts/store.ts'
import { EDIT_EVENT } from '../contracts/upstream-edit.ts'
import { replayMachine, verifyMachine } from './audit.ts'
import { editUpstream } from './edit.ts'
import { checkChain, flagRows } from './chain-check.ts'
import { pageRequests, pageUpstreams } from './pages.ts'
import { toStoreError } from './db-errors.ts'
import { ensureInstance, verifyAdminToken } from './instance.ts'
import * as reads from './reads.ts'
import * as te from './te-entities.ts'
import { forgetTeRequest, listTeMounts, setTeMounts } from './te-mounts.ts'
import { createGroupCommit } from './group-commit.ts'
import {
  applyMachineEvent,
  COMMIT_ORDER_LOCK_KEY,
  createRequest,
  createUpstream,
  type StoreHooks,
} from './repo.ts'

/** A handler gets its verb's input already parsed by the contract's schema. */
type Handlers = { [V in StoreVerb]: (input: StoreInput<V>) => Promise<StoreApi[V]['out']> }

export interface HandlerDeps {
  bus: Bus
  db: Db
  log: Logger
  hooks?: StoreHooks
}

/** The verb's input checked against its contract schema; a bad one is a ValidationError naming the key. */
export function parseStoreInput<V extends StoreVerb>(verb: V, input: unknown): StoreInput<V> {
  const parsed = STORE_INPUTS[verb].safeParse(input ?? {})
  if (!parsed.success) throw new ValidationError(describeIssues(parsed.error))
  return parsed.data as StoreInput<V>
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
      // Committed but not announced: consumers reconcile from the store (ARCHITECTURE.md §2), so log only.
      log.warn(
        { err, machine: record.machine, id: record.machineId, seq: record.seq },
        'transition not published'
      )
    }
  }
  return {
    'instance.get': async ({ adminToken }) =>
      ensureInstance(db, adminToken === undefined ? {} : { adminToken }),
    'instance.verifyAdminToken': async ({ token }) => ({
      ok: token !== undefined && (await verifyAdminToken(db, token)),
    }),
    'upstream.create': async (input) => {
      const record = await createUpstream(ctx, input)
      publish(record)
      return reads.getUpstream(db, record.machineId)
    },
    'upstream.edit': async (input) => {
      const edited = await editUpstream(ctx, input)
      if (edited.record) publish(edited.record)
      return edited
    },
    'upstream.patch': async ({ id, ...patch }) => reads.patchUpstream(db, id, patch),
    'upstream.get': async ({ id }) => reads.getUpstream(db, id),
    'upstream.list': async ({ status }) => reads.listUpstreams(db, status),
    'upstream.credentials': async ({ id }) => reads.upstreamCredentials(db, id),
    'request.create': async (input) => {
      const { id, record } = await createRequest(ctx, input)
      if (record) publish(record)
      return { request: await reads.getRequest(db, id), created: record !== null }
    },
    'request.get': async ({ id }) => reads.getRequest(db, id),
    'request.list': async ({ status }) => reads.listRequests(db, status),
    'request.page': async (input) => pageRequests(db, input),
    'upstream.page': async (input) => pageUpstreams(db, input),
    'audit.check': async (input) => checkChain(db, input),
    'request.secretHash': async ({ id }) => reads.requestSecretHash(db, id),
    'request.authenticate': async ({ instanceId, secret }) => {
      if (typeof secret !== 'string' || secret.length === 0) return { ok: false }
      return reads.authenticate(db, instanceId, secret)
    },
    event: async (input) => {
      if (input.event.type === EDIT_EVENT)
        throw new ValidationError(`'${EDIT_EVENT}' is sent by upstream.edit only`)
      const record = await applyMachineEvent(ctx, input)
      publish(record)
      // A downstream no longer Accepted (revoked, withdrawn) leaves the thin-edge.io twin.
      if (record.machine === 'request' && record.from === 'Accepted' && record.to !== 'Accepted')
        await forgetTeRequest(db, record.machineId).catch((err: unknown) =>
          log.warn({ err, requestId: record.machineId }, 'its thin-edge.io entities not removed')
        )
      return record
    },
    log: async ({ machine, id, after, limit }) =>
      flagRows(db, await reads.readLog(db, machine, id, after, limit)),
    'log.global': async ({ after, limit }) => reads.readGlobalLog(db, after, limit),
    replay: async ({ machine, id, to }) => replayMachine(db, machine, id, to),
    verify: async ({ machine, id }) => verifyMachine(db, machine, id),
    'te.entity.upsert': async (input) => te.upsertTeEntity(db, input),
    'te.entity.delete': async (input) => te.deleteTeEntity(db, input),
    'te.entity.observe': async (input) => te.observeTeEntity(db, input),
    'te.entity.list': async (input) => te.listTeEntities(db, input),
    'te.entity.get': async (input) => te.getTeEntity(db, input),
    'te.mount.set': async (input) => setTeMounts(db, input),
    'te.mount.list': async () => listTeMounts(db),
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
        return await handler(parseStoreInput(verb, input))
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
