import { verifyLog } from './bridge.ts'
import type { Fabric } from './fabric.ts'
import { sleep } from './wait.ts'

const RETRY_MS = 300
/** A call still failing this long after its first try is given up (the fault healed long before). */
const GIVE_UP_MS = 120_000
/** How long an activated upstream's link may take to forward. */
const FORWARDING_MS = 30_000
const UNCLEAR_KEPT = 20
/** Failures noted one by one, in time order with the fault's notes; the rest only counted. */
const FAILURES_NOTED = 20

/**
 * What the lifecycle lanes saw: every operation is an operator API call, called again until it
 * takes. A failure must be a clear one (a 4xx, or 503, with a JSON error code); anything else (a
 * 500, a timeout, a dropped connection, a body that is not JSON) is `unclear`.
 */
export interface LifecycleReport {
  attempted: number
  completed: number
  /** Failed calls while the fault lasted, by `<status> <code>`. */
  failedDuringFault: Record<string, number>
  /** Failed calls before the fault or after it healed. */
  failedOutsideFault: Record<string, number>
  unclear: string[]
  /** The longest a single call took to answer (a store client's own retries show here). */
  slowestCallMs: number
  /** The last operation's completion, in ms after the fault healed (0: all done before). */
  lastCompletedAfterHealMs: number
  /** Rounds finished: one upstream each, created to deleted. */
  rounds: number
  /** Operations given up on, and why. */
  gaveUp: string[]
  /** Activated upstreams whose link never forwarded. */
  neverForwarded: string[]
  /** Every upstream's and incoming request's log, replayed by the store. */
  logsChecked: number
  logsVerified: number
  logFailures: string[]
  /** Upstreams nobody asked for: a create whose answer was lost, then made again. */
  orphans: string[]
}

export interface Lifecycle {
  /** Operator calls waiting for an answer now. */
  readonly inFlight: number
  faultStarted(): void
  faultHealed(): void
  /** Let each lane finish its round (retrying until each call takes), then check every log. */
  finish(): Promise<LifecycleReport>
}

type Answer = { status: number; body: any; ms: number }

interface Op {
  name: string
  path: string
  method?: string
  body?: unknown
  /** A 200 that is not this yet is asked again, not counted as a failure (a refresh polling). */
  expect?: (body: any) => boolean
  /** After a failure: the result when an earlier try took effect after all (its answer lost). */
  tookEffect?: (failed: Answer) => Promise<any>
}

/** The lanes' operator calls: each counted, each failure by phase and code. */
class Calls {
  readonly report: LifecycleReport = {
    attempted: 0,
    completed: 0,
    failedDuringFault: {},
    failedOutsideFault: {},
    unclear: [],
    slowestCallMs: 0,
    lastCompletedAfterHealMs: 0,
    rounds: 0,
    gaveUp: [],
    neverForwarded: [],
    logsChecked: 0,
    logsVerified: 0,
    logFailures: [],
    orphans: [],
  }
  inFlight = 0
  during = false
  healedAt: number | undefined

  private noted = 0

  constructor(
    readonly fabric: Fabric,
    private readonly note: (line: string) => void
  ) {}

  /** One call; a thrown fetch (timeout, refused, reset) answers status 0 with its message. */
  async call(path: string, method = 'GET', body?: unknown): Promise<Answer> {
    this.inFlight++
    const started = Date.now()
    let answer: Omit<Answer, 'ms'>
    try {
      answer = await this.fabric.api(path, {
        method,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      })
    } catch (err) {
      answer = {
        status: 0,
        body: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
      }
    }
    this.inFlight--
    const ms = Date.now() - started
    this.report.slowestCallMs = Math.max(this.report.slowestCallMs, ms)
    return { ...answer, ms }
  }

  /** One operation, called until it takes; gives up after GIVE_UP_MS. */
  async op({ name, path, method = 'POST', body, expect, tookEffect }: Op): Promise<any> {
    this.report.attempted++
    const since = Date.now()
    for (;;) {
      const res = await this.call(path, method, body)
      const ok = res.status === 200 || res.status === 201
      if (ok && (!expect || expect(res.body))) return this.completed(res.body)
      if (!ok) {
        this.failed(name, path, res)
        const took = await tookEffect?.(res)
        if (took !== undefined) {
          if (this.noted++ < FAILURES_NOTED) this.note(`lifecycle ${name} ${idIn(path)}: had taken`)
          return this.completed(took)
        }
      }
      if (Date.now() - since > GIVE_UP_MS) {
        const last = JSON.stringify(res.body).slice(0, 200)
        throw new Error(`${name} ${path}: still ${res.status} ${last}`)
      }
      await sleep(RETRY_MS)
    }
  }

  /** A `tookEffect`: the machine at `path` is in `status` now, so an earlier try took. */
  inStatus(path: string, status: string) {
    return async () => {
      const res = await this.call(path)
      return res.status === 200 && res.body.status === status ? res.body : undefined
    }
  }

  private failed(name: string, path: string, res: Answer) {
    const code = res.body?.error?.code
    const clear =
      typeof code === 'string' && ((res.status >= 400 && res.status < 500) || res.status === 503)
    const key = `${res.status} ${clear ? code : 'unclear'}`
    const counts = this.during ? this.report.failedDuringFault : this.report.failedOutsideFault
    counts[key] = (counts[key] ?? 0) + 1
    if (!clear && this.report.unclear.length < UNCLEAR_KEPT) {
      const detail = typeof res.body === 'string' ? res.body : JSON.stringify(res.body)
      this.report.unclear.push(`${name}: ${res.status} ${detail.slice(0, 200)}`)
    }
    if (this.noted++ < FAILURES_NOTED) {
      this.note(`lifecycle ${name} ${idIn(path)}: ${key} after ${res.ms} ms`)
    }
  }

  private completed<T>(result: T): T {
    this.report.completed++
    if (this.healedAt !== undefined) {
      const after = Date.now() - this.healedAt
      this.report.lastCompletedAfterHealMs = Math.max(this.report.lastCompletedAfterHealMs, after)
    }
    return result
  }
}

/** `/api/v1/upstreams/<id>/…` → the id. */
const idIn = (path: string) => path.split('/')[4] ?? ''

/** What the rounds made: every log is checked at the end. */
interface Made {
  tag: string
  upstreams: Set<string>
  requests: Set<string>
}

/** A plain MQTT upstream to the cloud: create, bind, activate, forwarding, deactivate, delete. */
async function mqttRound(calls: Calls, made: Made, lane: string, i: number) {
  const created = await calls.op({
    name: 'create mqtt upstream',
    path: '/api/v1/upstreams',
    body: { kind: 'mqtt', ...calls.fabric.cloudUpstream },
  })
  const id: string = created.id
  made.upstreams.add(id)
  const path = `/api/v1/upstreams/${id}`
  const bindings = [
    {
      source: `lifecycle/${made.tag}/${lane}/${i}`,
      target: `lifecycle-up/${made.tag}/${lane}/${i}`,
    },
  ]
  await calls.op({ name: 'bind', path: `${path}/bindings`, method: 'PUT', body: bindings })
  await calls.op({
    name: 'activate',
    path: `${path}/activate`,
    tookEffect: calls.inStatus(path, 'Active'),
  })
  await linkForwards(calls, id)
  await calls.op({
    name: 'deactivate',
    path: `${path}/deactivate`,
    tookEffect: calls.inStatus(path, 'Approved'),
  })
  await calls.op({
    name: 'delete',
    path,
    method: 'DELETE',
    tookEffect: calls.inStatus(path, 'Deleted'),
  })
}

/**
 * A handshake upstream to this fabric's own handshake API: create (the request arrives here),
 * accept, or on odd rounds decline and ask again first; approved on refresh; bind; delete
 * (which withdraws the request).
 */
async function handshakeRound(calls: Calls, made: Made, lane: string, i: number) {
  const handshake = new URL(calls.fabric.of('handshake')[0]!.httpUrl)
  const gateway = new URL(calls.fabric.of('gateway')[0]!.mqttUrl!)
  const created = await calls.op({
    name: 'create handshake upstream',
    path: '/api/v1/upstreams',
    body: {
      host: 'mqtt://127.0.0.1',
      brokerPort: Number(gateway.port),
      httpPort: Number(handshake.port),
    },
    // One live upstream per server: a lost answer's upstream is refused as a twin, by id.
    tookEffect: async (res) =>
      res.body?.error?.code === 'already_exists' && res.body.error.details?.id
        ? { id: res.body.error.details.id }
        : undefined,
  })
  const id: string = created.id
  made.upstreams.add(id)
  const path = `/api/v1/upstreams/${id}`
  const refresh = (status: string) =>
    calls.op({ name: 'refresh', path: `${path}/refresh`, expect: (b) => b.status === status })
  let requestId = await requestOf(calls, made, path, created)
  if (i % 2 === 1) {
    const request = `/api/v1/requests/${requestId}`
    const declined = calls.inStatus(request, 'Declined')
    await calls.op({ name: 'decline', path: `${request}/decline`, tookEffect: declined })
    await refresh('Declined')
    const pending = calls.inStatus(path, 'Pending')
    const asked = await calls.op({ name: 'request', path: `${path}/request`, tookEffect: pending })
    requestId = await requestOf(calls, made, path, asked)
  }
  const request = `/api/v1/requests/${requestId}`
  const accepted = calls.inStatus(request, 'Accepted')
  await calls.op({ name: 'accept', path: `${request}/accept`, body: {}, tookEffect: accepted })
  await refresh('Approved')
  const bindings = [
    {
      source: `lifecycle/${made.tag}/${lane}/${i}`,
      target: `lifecycle-up/${made.tag}/${lane}/${i}`,
    },
  ]
  await calls.op({ name: 'bind', path: `${path}/bindings`, method: 'PUT', body: bindings })
  await calls.op({
    name: 'delete',
    path,
    method: 'DELETE',
    tookEffect: calls.inStatus(path, 'Deleted'),
  })
}

/** The request the upstream's server gave it; refreshed until it has one (the send may fail). */
async function requestOf(calls: Calls, made: Made, path: string, upstream: any): Promise<string> {
  const id: string =
    upstream?.remoteRequestId ??
    (
      await calls.op({
        name: 'refresh',
        path: `${path}/refresh`,
        expect: (b) => !!b.remoteRequestId,
      })
    ).remoteRequestId
  made.requests.add(id)
  return id
}

/** Wait for an activated upstream's link to forward; one that never does is reported. */
async function linkForwards(calls: Calls, id: string) {
  const deadline = Date.now() + FORWARDING_MS
  while (Date.now() < deadline) {
    const res = await calls.call(`/api/v1/upstreams/${id}`)
    if (res.status === 200 && res.body.link?.state === 'Forwarding') return
    await sleep(RETRY_MS)
  }
  calls.report.neverForwarded.push(id)
}

async function checkLogs(calls: Calls, made: Made) {
  const { report } = calls
  const logs = [
    ...[...made.upstreams].map((id) => [id, 'upstreams'] as const),
    ...[...made.requests].map((id) => [id, 'requests'] as const),
  ]
  for (const [id, machine] of logs) {
    report.logsChecked++
    const log = await verifyLog(calls.fabric, id, machine).catch((err: Error) => ({
      ok: false,
      detail: err.message,
    }))
    if (log.ok) report.logsVerified++
    else report.logFailures.push(`${machine}/${id}: ${log.detail}`)
  }
}

/**
 * Upstreams made while the lanes ran that are not theirs, and not deleted; deleted now, as is
 * a lane's own that a round given up left (the next fault starts without them).
 */
async function findOrphans(calls: Calls, made: Made, since: number) {
  const res = await calls.call('/api/v1/upstreams?limit=1000')
  if (res.status !== 200) return void calls.report.orphans.push(`cannot list: ${res.status}`)
  for (const up of res.body as Array<{ id: string; status: string; createdAt: string }>) {
    if (up.status === 'Deleted' || Date.parse(up.createdAt) < since) continue
    if (!made.upstreams.has(up.id)) calls.report.orphans.push(`${up.id} (${up.status})`)
    await calls.call(`/api/v1/upstreams/${up.id}`, 'DELETE')
  }
}

/**
 * Three lanes drive other upstreams through their lifecycle over the operator API while a fault
 * runs, round after round: plain MQTT upstreams to the cloud (mqttRound, two lanes) and
 * handshake upstreams to the fabric itself (handshakeRound). A handshake upstream is never activated: it would
 * bridge the fabric into itself.
 */
export function startLifecycle(fabric: Fabric, note: (line: string) => void): Lifecycle {
  const calls = new Calls(fabric, note)
  const made: Made = { tag: Date.now().toString(36), upstreams: new Set(), requests: new Set() }
  const startedAt = Date.now()
  let stopping = false
  const lane = async (name: string, round: typeof mqttRound) => {
    for (let i = 0; !stopping; i++) {
      try {
        await round(calls, made, name, i)
        calls.report.rounds++
      } catch (err) {
        calls.report.gaveUp.push(`${name} round ${i}: ${(err as Error).message}`)
        return
      }
    }
  }
  // One handshake lane: a server holds one live request per instance (a second is a twin).
  const lanes = [lane('mqtt-a', mqttRound), lane('mqtt-b', mqttRound), lane('hs', handshakeRound)]
  return {
    get inFlight() {
      return calls.inFlight
    },
    faultStarted: () => void (calls.during = true),
    faultHealed() {
      calls.during = false
      calls.healedAt = Date.now()
    },
    async finish() {
      stopping = true
      await Promise.all(lanes)
      await checkLogs(calls, made)
      await findOrphans(calls, made, startedAt)
      return calls.report
    },
  }
}
