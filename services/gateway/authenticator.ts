/**
 * Who a CONNECT is: local users (scrypt), the internal credential, bridges (the binding store),
 * anonymous by policy. Every expensive check is bounded (ARCHITECTURE.md §4 step 8): answers
 * are cached briefly, identical checks in flight are shared, each kind runs under a semaphore
 * with a bounded queue, and each source has a budget of failed CONNECTs. A grant change (an
 * accept, a revoke, a withdrawal) moves the epoch: no answer that was asked for before it is
 * used or cached after it.
 */
import { sameSecret } from '../common/digest.ts'
import { INTERNAL_USERNAME } from '../common/internal-credential.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import { Busy, createLimiter, createSourceBudget, type Limiter } from './admission.ts'
import { ConnackError, type AnonymousPolicy, type LocalUser, type Principal } from './auth.ts'
import { isLoopback, sourceKey } from './client-address.ts'
import { createCredentialCache, type CredentialCache } from './credential-cache.ts'
import type { GatewayCounters } from './metrics.ts'
import { verifyPassword } from './passwords.ts'

export interface AuthLimits {
  /** ms an answer (accepted or refused) is reused; 0 = no cache. */
  cacheMs: number
  /** Answers kept; past it the oldest is dropped. */
  cacheMaxEntries: number
  /** scrypt verifications at once (32 MiB and ~50–100 ms of one core each). */
  scryptConcurrency: number
  /** Bridge checks against the store at once. */
  storeConcurrency: number
  /** Checks waiting for a slot, per kind; past it closed without a CONNACK. */
  queueMax: number
  /** Failed CONNECTs a source may make per second, and at once (a good login gives its token back). */
  connectRatePerSec: number
  connectRateBurst: number
  /** CONNECTs of one source being authenticated at once; more are closed without a CONNACK. */
  connectPendingPerSource: number
  /** Sources whose budget is remembered; past it the least recently seen is forgotten. */
  connectRateSources: number
}

export const DEFAULT_AUTH_LIMITS: AuthLimits = {
  cacheMs: 5_000, // 5 s: bounds store load on reconnect storms
  cacheMaxEntries: 10_000,
  scryptConcurrency: 2, // libuv runs 4 threads; two keep room for file and DNS work
  storeConcurrency: 16,
  queueMax: 64,
  connectRatePerSec: 10,
  connectRateBurst: 50,
  connectPendingPerSource: 8,
  connectRateSources: 10_000,
}

// A grant that keeps changing while its check is on the way is asked again this often, then
// closed without a CONNACK (the client retries later).
const EPOCH_RETRIES = 3

export interface AuthenticatorOptions {
  anonymous: AnonymousPolicy
  users: readonly LocalUser[]
  store: StoreClient
  internalSecret: () => Promise<string>
  log: Logger
  counters: GatewayCounters
  limits?: Partial<AuthLimits>
}

type Answer = { principal: Principal | null; epoch: number }

export function createAuthenticator({
  anonymous,
  users,
  store,
  internalSecret,
  log,
  counters,
  limits: overrides = {},
}: AuthenticatorOptions) {
  const limits = { ...DEFAULT_AUTH_LIMITS, ...overrides }
  const byName = new Map(users.map((u) => [u.username, u.passwordHash]))
  const cache = createCredentialCache<Principal>({
    ttlMs: limits.cacheMs,
    maxEntries: limits.cacheMaxEntries,
  })
  const scrypt = createLimiter('password checks', limits.scryptConcurrency, limits.queueMax)
  const storeChecks = createLimiter('bridge checks', limits.storeConcurrency, limits.queueMax)
  const budget = createSourceBudget({
    perSec: limits.connectRatePerSec,
    burst: limits.connectRateBurst,
    pendingMax: limits.connectPendingPerSource,
    maxSources: limits.connectRateSources,
  })
  let epoch = 0
  /** The epoch each bridge principal was admitted in. */
  const admittedIn = new WeakMap<Principal, number>()

  const bridgeAnswer = askTheStore({
    store,
    checks: storeChecks,
    counters,
    log,
    admittedIn,
    epoch: () => epoch,
  })

  async function userAnswer(username: string, secret: string, hash: string): Promise<Answer> {
    const asked = epoch
    const ok = await scrypt.run(() => {
      counters.scryptChecks++
      return verifyPassword(secret, hash)
    })
    return { principal: ok ? { kind: 'user', username } : null, epoch: asked }
  }

  const remembered = rememberAnswers(cache, counters, () => epoch)

  async function identify(
    username: string | undefined,
    password: Buffer | undefined,
    address: string | undefined
  ): Promise<Principal> {
    if (username === undefined || username === '') {
      const allowed = anonymous === 'always' || (anonymous === 'loopback' && isLoopback(address))
      if (!allowed) throw new ConnackError(5, 'not authorized: anonymous clients are refused')
      return { kind: 'anonymous' }
    }
    const secret = password?.toString('utf8') ?? ''
    if (username === INTERNAL_USERNAME) {
      if (sameSecret(secret, await internalSecret())) return { kind: 'internal', username }
      throw new ConnackError(4, 'bad user name or password')
    }
    const hash = byName.get(username)
    if (hash !== undefined)
      return remembered(username, secret, () => userAnswer(username, secret, hash))
    return remembered(username, secret, () => bridgeAnswer(username, secret))
  }

  return {
    async authenticate({
      username,
      password,
      remoteAddress,
    }: {
      username: string | undefined
      password: Buffer | undefined
      /** The client's address as `clientAddressOf` decided it; undefined = unknown. */
      remoteAddress: string | undefined
    }): Promise<Principal> {
      const admit = budget.admit(sourceKey(remoteAddress))
      counters.connectSourcesEvicted = budget.evictions // monotonic: mirrored as a counter
      if (!admit.ok) {
        counters.connectRateLimited++
        throw new ConnackError(3, `server unavailable: ${admit.reason} from this address`)
      }
      try {
        const principal = await identify(username, password, remoteAddress)
        admit.done(true)
        return principal
      } catch (err) {
        admit.done(false)
        throw err
      }
    },
    /**
     * A grant changed (a request was accepted, revoked or withdrawn): every cached answer is
     * dropped, and answers asked for before now are asked again when they arrive.
     */
    grantsChanged(): void {
      epoch++
      cache.clear()
    },
    /** Was this bridge admitted before the latest grant change? Then it must be checked again. */
    isStale(principal: Principal): boolean {
      return principal.kind === 'bridge' && admittedIn.get(principal) !== epoch
    },
    /** Sizes, for tests and gauges. */
    sizes: () => ({ cached: cache.size, sources: budget.size }),
  }
}

/** A bridge's answer from the store, asked again when a grant changed while it was on its way. */
function askTheStore({
  store,
  checks,
  counters,
  log,
  admittedIn,
  epoch,
}: {
  store: StoreClient
  checks: Limiter
  counters: GatewayCounters
  log: Logger
  admittedIn: WeakMap<Principal, number>
  epoch: () => number
}) {
  return async function bridgeAnswer(username: string, secret: string): Promise<Answer> {
    for (let attempt = 0; attempt < EPOCH_RETRIES; attempt++) {
      const asked = epoch()
      let res: { ok: boolean; requestId?: string; grants?: string[] }
      try {
        res = await checks.run(() => {
          counters.storeAuthChecks++
          return store.call('request.authenticate', { instanceId: username, secret })
        })
      } catch (err) {
        if (err instanceof Busy) throw err
        log.warn({ err, username }, 'binding store did not answer request.authenticate')
        throw new ConnackError(3, 'server unavailable: cannot check bridge credentials')
      }
      // A grant changed while the answer was on its way: it may predate a revocation.
      if (asked !== epoch()) continue
      if (!res.ok) return { principal: null, epoch: asked }
      const principal: Principal = {
        kind: 'bridge',
        username,
        requestId: res.requestId,
        grants: res.grants ?? [],
      }
      admittedIn.set(principal, asked)
      return { principal, epoch: asked }
    }
    throw new ConnackError(3, 'server unavailable: grants changed during the check')
  }
}

/**
 * A cached answer, a shared one in flight, or a new one from `compute`; an answer is cached only
 * when no grant changed while it was asked for.
 */
function rememberAnswers(
  cache: CredentialCache<Principal>,
  counters: GatewayCounters,
  epoch: () => number
) {
  const inflight = new Map<string, Promise<Answer>>()
  return async function remembered(
    username: string,
    secret: string,
    compute: () => Promise<Answer>
  ): Promise<Principal> {
    const digest = cache.digest(username, secret)
    const hit = cache.get(digest)
    let principal: Principal | null
    if (hit) {
      counters.authCacheHits++
      principal = hit.principal
    } else {
      let pending = inflight.get(digest)
      if (!pending) {
        pending = compute().finally(() => inflight.delete(digest))
        inflight.set(digest, pending)
      }
      let answer: Answer
      try {
        answer = await pending
      } catch (err) {
        if (!(err instanceof Busy)) throw err
        counters.authBusy++
        throw new ConnackError(3, err.message)
      }
      if (answer.epoch === epoch()) {
        const before = cache.counts.evictions
        cache.set(digest, answer.principal)
        counters.authCacheEvictions += cache.counts.evictions - before
      }
      principal = answer.principal
    }
    if (!principal) throw new ConnackError(4, 'bad user name or password')
    return principal
  }
}

export type Authenticator = ReturnType<typeof createAuthenticator>
