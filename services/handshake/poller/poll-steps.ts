import { UbError } from '../../common/errors.ts'
import type { Logger } from '../../common/log.ts'
import {
  RemoteError,
  type RemoteClient,
  type RemoteStatus,
} from '../../contracts/handshake-client.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { EventActor, Upstream } from '../../contracts/store.ts'
import type { UpstreamEvent } from '../../../machines/index.ts'
import { sha256Hex } from '../secret.ts'
import { withdrawRequest } from '../withdraw.ts'

/** The statuses whose upstream server is asked; Declined, Revoked and Deleted ones are left alone. */
export const POLLED = new Set(['Pending', 'Approved', 'Active'])

/** What the steps of a poll work with. */
export interface PollContext {
  store: StoreClient
  remote: RemoteClient
  log: Logger
  instanceId: string
  /** Upstreams this process was told owe a withdrawal; a withdrawal done takes one out. */
  owedHere: Set<string>
}

/** One poll of one upstream, as far as it has got. */
interface Poll {
  readonly id: string
  /** The upstream as last read or written. */
  up: Upstream
  /** Its handshake secret: the bridge's MQTT password, and what proves the request ours. */
  secret: string
  /** What the upstream server says of our request. */
  answer?: RemoteStatus
}

/** A step ends the poll with the upstream it returns, or hands on to the next with undefined. */
type PollStep = (
  ctx: PollContext,
  poll: Poll
) => Upstream | undefined | Promise<Upstream | undefined>

/** One poll of one upstream, as aedes lists its `connectActions`: these steps, in this order. */
const POLL_STEPS: readonly PollStep[] = [
  withdrawIfOwed,
  leaveUnlessPolled,
  readSecret,
  sendRequestOnce,
  askStatus,
  refuseWithdrawn,
  askAgainIfExpired,
  applyAnswer,
  clearLastError,
]

/** Poll the upstream's server once; resolves with the upstream afterwards. */
export async function pollOnce(ctx: PollContext, id: string): Promise<Upstream> {
  const poll: Poll = { id, up: await ctx.store.call('upstream.get', { id }), secret: '' }
  for (const step of POLL_STEPS) {
    const done = await step(ctx, poll)
    if (done) return done
  }
  return poll.up
}

/** A Deleted upstream whose request could not be withdrawn: this poll only withdraws it. */
function withdrawIfOwed(ctx: PollContext, { up }: Poll): Promise<Upstream> | undefined {
  if (up.status === 'Deleted' && up.withdrawalOwed && up.kind === 'uns')
    return withdrawOwed(ctx, up)
  return undefined
}

function leaveUnlessPolled(_ctx: PollContext, { up }: Poll): Upstream | undefined {
  return up.kind !== 'uns' || !POLLED.has(up.status) ? up : undefined
}

async function readSecret(ctx: PollContext, poll: Poll): Promise<Upstream | undefined> {
  const { password: secret } = await ctx.store.call('upstream.credentials', { id: poll.id })
  if (!secret)
    return recordError(ctx, poll.up, new RemoteError('this upstream has no handshake secret', null))
  poll.secret = secret
  return undefined
}

/** No request on the server yet: send it, while Pending, and keep the id it is known by. */
async function sendRequestOnce(ctx: PollContext, poll: Poll): Promise<Upstream | undefined> {
  const { up } = poll
  if (up.remoteRequestId) return undefined
  if (up.status !== 'Pending') return up
  try {
    const res = await ctx.remote.sendRequest(up, {
      instanceId: ctx.instanceId,
      secretHash: sha256Hex(poll.secret),
    })
    poll.up = await ctx.store.call('upstream.patch', {
      id: poll.id,
      remoteRequestId: res.requestId,
      lastError: null,
    })
  } catch (err) {
    return recordError(ctx, up, err)
  }
  return undefined
}

async function askStatus(ctx: PollContext, poll: Poll): Promise<Upstream | undefined> {
  const { up } = poll
  try {
    poll.answer = await ctx.remote.getStatus(up, up.remoteRequestId!, poll.secret)
  } catch (err) {
    if (err instanceof RemoteError && err.status === 404 && up.status === 'Pending') {
      // The server no longer knows our request (its data was reset): ask again next time.
      return ctx.store.call('upstream.patch', {
        id: poll.id,
        remoteRequestId: null,
        lastError: `${err.message}; asking again`,
      })
    }
    return recordError(ctx, up, err)
  }
  return undefined
}

/** The server let our request expire unanswered: still wanted, so ask again next time. */
function askAgainIfExpired(ctx: PollContext, poll: Poll): Promise<Upstream> | undefined {
  if (poll.answer!.status !== 'Expired' || poll.up.status !== 'Pending') return undefined
  return ctx.store.call('upstream.patch', {
    id: poll.id,
    remoteRequestId: null,
    lastError: 'the upstream server let the request expire unanswered; asking again',
  })
}

function refuseWithdrawn(ctx: PollContext, poll: Poll): Promise<Upstream> | undefined {
  if (poll.answer!.status !== 'Withdrawn') return undefined
  return recordError(
    ctx,
    poll.up,
    new RemoteError('the upstream server has this request as Withdrawn', 200)
  )
}

/** The server's answer → the event that moves our machine there, if any. */
async function applyAnswer(ctx: PollContext, poll: Poll): Promise<undefined> {
  const { up } = poll
  const answer = poll.answer!
  const event = eventFor(up, answer)
  if (!event) return undefined
  // An edit to another server or Ask Again forgot this request meanwhile: its answer is stale.
  const now = await ctx.store.call('upstream.get', { id: up.id })
  if (now.remoteRequestId !== up.remoteRequestId) return undefined
  const actor: EventActor = answer.instanceId
    ? { kind: 'remote', id: answer.instanceId }
    : { kind: 'remote' }
  try {
    await ctx.store.call('event', { machine: 'upstream', id: up.id, event: { ...event }, actor })
  } catch (err) {
    // Someone else moved the upstream first (an operator, another replica): the next poll sees it.
    if (
      err instanceof UbError &&
      (err.code === 'invalid_transition' || err.code === 'version_conflict')
    ) {
      ctx.log.debug({ err, upstream: up.id }, 'handshake event not applied')
      return undefined
    }
    throw err
  }
  return undefined
}

/** The server answered: the upstream as the event left it, with no error of an earlier poll. */
async function clearLastError(ctx: PollContext, poll: Poll): Promise<undefined> {
  const up = await ctx.store.call('upstream.get', { id: poll.id })
  poll.up =
    up.lastError === null
      ? up
      : await ctx.store.call('upstream.patch', { id: poll.id, lastError: null })
  return undefined
}

async function recordError(ctx: PollContext, up: Upstream, err: unknown): Promise<Upstream> {
  if (!(err instanceof RemoteError)) throw err
  ctx.log.info({ upstream: up.id, err: err.message }, 'upstream server not answering as hoped')
  if (up.lastError === err.message) return up
  return ctx.store.call('upstream.patch', { id: up.id, lastError: err.message })
}

/** Withdraw the request of an upstream deleted while its server could not be reached. */
async function withdrawOwed(ctx: PollContext, up: Upstream): Promise<Upstream> {
  const { store, remote, log, owedHere } = ctx
  const error = await withdrawRequest(store, remote, up)
  if (error !== null) {
    const lastError = `withdrawal pending: ${error}`
    return up.lastError === lastError ? up : store.call('upstream.patch', { id: up.id, lastError })
  }
  log.info({ upstream: up.id }, 'withdrew the request of a deleted upstream')
  owedHere.delete(up.id)
  return store.call('upstream.patch', { id: up.id, withdrawalOwed: false, lastError: null })
}

function sameGrants(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n')
}

function eventFor(up: Upstream, remote: RemoteStatus): UpstreamEvent | null {
  switch (remote.status) {
    case 'Accepted':
      if (up.status === 'Pending') return { type: 'upstream.approve', grants: remote.grants }
      // Re-approval with other grants is recorded in Approved (the machine accepts it there).
      if (up.status === 'Approved' && !sameGrants(up.grants, remote.grants))
        return { type: 'upstream.approve', grants: remote.grants }
      return null
    case 'Declined':
      return up.status === 'Pending' ? { type: 'upstream.decline' } : null
    case 'Revoked':
      return { type: 'upstream.revoke' }
    default:
      return null
  }
}
