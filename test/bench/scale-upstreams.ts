/**
 * Many plain-MQTT upstreams through the operator API, as test/chaos/bridge.ts sets up one: a
 * plain broker is Approved at once, then bound and activated. Upstream k mirrors `plant<k>` to
 * `acme/plant<k>` on the cloud broker, so 100 upstreams share one cloud Mosquitto.
 */
import { retry } from '../chaos/wait.ts'
import { apiRequest, startInstance, type Instance } from '../helpers/instance.ts'

/** Local namespace of upstream k, and where its bridge puts it on the cloud broker. */
export const sourceOf = (k: number): string => `plant${k}`
export const targetOf = (k: number): string => `acme/plant${k}`
const API_CONCURRENCY = 4 // calls in flight while creating or switching 100 upstreams

export type Api = (method: string, path: string, body?: unknown) => Promise<ApiAnswer>
export interface ApiAnswer {
  status: number
  body: any
}

/** `fn(0) … fn(count - 1)`, API_CONCURRENCY at a time; the results in order. */
async function inBatches<T>(count: number, fn: (k: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count)
  let next = 0
  await Promise.all(
    Array.from({ length: API_CONCURRENCY }, async () => {
      while (next < count) {
        const k = next++
        out[k] = await fn(k)
      }
    })
  )
  return out
}

async function expectStatus(what: string, status: number, call: Promise<ApiAnswer>) {
  const res = await call
  if (res.status !== status) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

/** `count` upstreams to the cloud broker on `cloudPort`, bound and Approved; their ids. */
export function createUpstreams(api: Api, cloudPort: number, count: number): Promise<string[]> {
  return inBatches(count, async (k) => {
    const created = await expectStatus(
      'create upstream',
      201,
      api('POST', '/api/v1/upstreams', {
        kind: 'mqtt',
        host: 'mqtt://127.0.0.1',
        brokerPort: cloudPort,
      })
    )
    const id = created.id as string
    await expectStatus(
      'bind',
      200,
      api('PUT', `/api/v1/upstreams/${id}/bindings`, [{ source: sourceOf(k), target: targetOf(k) }])
    )
    return id
  })
}

/** POST activate (or deactivate) to every upstream, a few at a time. */
export async function switchAll(
  api: Api,
  ids: string[],
  action: 'activate' | 'deactivate'
): Promise<void> {
  await inBatches(ids.length, (k) =>
    expectStatus(action, 200, api('POST', `/api/v1/upstreams/${ids[k]}/${action}`))
  )
}

/**
 * The embedded default, as `uns-bridge start` runs it: every service in one process (in-process
 * bus with its KV journal, PGlite), `count` upstreams Active and forwarding.
 */
export async function startEmbedded(
  cloudPort: number,
  count: number
): Promise<{ url: string; close(): Promise<unknown> }> {
  const inst: Instance = await startInstance()
  try {
    const api: Api = (method, path, body) => apiRequest(inst, method, path, body)
    const ids = await createUpstreams(api, cloudPort, count)
    await switchAll(api, ids, 'activate')
    await retry(
      async () => {
        for (const id of ids) {
          const { body } = await api('GET', `/api/v1/upstreams/${id}`)
          if (body?.link?.state !== 'Forwarding') throw new Error(`${id}: ${body?.link?.state}`)
        }
      },
      { timeoutMs: 120_000, everyMs: 500, what: `${count} embedded links to forward` }
    )
    return { url: inst.mqttUrl!, close: () => inst.stop() }
  } catch (err) {
    await inst.stop()
    throw err
  }
}
