import type { Fabric } from './fabric.ts'
import type { ServiceProcess } from './services.ts'
import { retry } from './wait.ts'

/** Local namespace the publishers write under, and where the bridge puts it upstream. */
export const SOURCE = 'plant1'
export const TARGET = 'acme/plant1'

export interface LinkView {
  state: string
  owner: string
  forwarded: number
  lastError: string | null
}

/**
 * One upstream Active with one binding, through the operator API as an operator would: a plain
 * MQTT upstream (the Mosquitto) is Approved at once, then bound and activated.
 */
export async function setUpBridge(fabric: Fabric): Promise<string> {
  const created = await fabric.api('/api/v1/upstreams', {
    method: 'POST',
    body: JSON.stringify({ kind: 'mqtt', ...fabric.cloudUpstream }),
  })
  if (created.status !== 201) throw new Error(`create upstream: ${JSON.stringify(created)}`)
  const id = created.body.id as string
  const bound = await fabric.api(`/api/v1/upstreams/${id}/bindings`, {
    method: 'PUT',
    body: JSON.stringify([{ source: SOURCE, target: TARGET }]),
  })
  if (bound.status !== 200) throw new Error(`bind: ${JSON.stringify(bound)}`)
  const activated = await fabric.api(`/api/v1/upstreams/${id}/activate`, { method: 'POST' })
  if (activated.status !== 200) throw new Error(`activate: ${JSON.stringify(activated)}`)
  await forwarding(fabric, id, 60_000)
  return id
}

export async function linkOf(fabric: Fabric, id: string): Promise<LinkView | undefined> {
  const { status, body } = await fabric.api(`/api/v1/upstreams/${id}`)
  if (status !== 200) throw new Error(`GET upstream ${id}: ${status} ${JSON.stringify(body)}`)
  return body.link ?? undefined
}

/**
 * Wait until a running supervisor says the link forwards, and answer it. A killed owner's last
 * status stays in the bucket (Forwarding, its id) until another writes over it: not counted.
 */
export function forwarding(fabric: Fabric, id: string, timeoutMs: number): Promise<LinkView> {
  return retry(
    async () => {
      const link = await linkOf(fabric, id)
      if (link?.state !== 'Forwarding' || !ownerOf(fabric, link)) {
        throw new Error(`link ${JSON.stringify(link)}`)
      }
      return link
    },
    { timeoutMs, what: 'a running supervisor to forward the link' }
  )
}

/** The supervisor process that owns the bridge now. */
export async function owningSupervisor(fabric: Fabric, id: string): Promise<ServiceProcess> {
  return ownerOf(fabric, await forwarding(fabric, id, 30_000))!
}

/** A supervisor id carries its process id: `<instance>-<host>-<pid>-<random>`. */
function ownerOf(fabric: Fabric, link: LinkView): ServiceProcess | undefined {
  return fabric
    .of('supervisor')
    .find((s) => s.pid !== undefined && link.owner.includes(`-${s.pid}-`))
}

export interface LogCheck {
  ok: boolean
  rows: number
  detail?: string
}

/**
 * An upstream's (or an incoming request's) lifecycle log, replayed and its hash chain verified
 * by the store.
 */
export async function verifyLog(
  fabric: Fabric,
  id: string,
  machine: 'upstreams' | 'requests' = 'upstreams'
): Promise<LogCheck> {
  const { body } = await retry(
    async () => {
      const res = await fabric.api(`/api/v1/${machine}/${id}/replay`)
      if (res.status !== 200) throw new Error(`replay: ${res.status} ${JSON.stringify(res.body)}`)
      return res
    },
    { timeoutMs: 30_000, what: 'the log replay' }
  )
  const ok = body.verify?.ok === true && body.matchesStored !== false
  return {
    ok,
    rows: body.verify?.rows ?? 0,
    ...(ok ? {} : { detail: JSON.stringify({ verify: body.verify, matches: body.matchesStored }) }),
  }
}
