import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { launchProcess, type LaunchedProcess } from '../../deploy/launch.ts'
import { tlsFetch } from '../../services/contracts/tls-fetch.ts'
import { seedPglite } from './pg-template.ts'

export interface Instance {
  httpUrl: string
  mqttUrl: string | null
  /** `mqtts://127.0.0.1:<port>` when started with `tls`. */
  mqttsUrl: string | null
  /** fetch that trusts this instance's certificate (the global fetch when it has none). */
  fetch: typeof globalThis.fetch
  instanceId: string
  adminToken: string
  dataDir: string
  process: LaunchedProcess
  output(): string
  /** SIGTERM and wait for a clean exit; resolves to the exit code. */
  stop(): Promise<number | null>
  /** SIGKILL: no cleanup runs. */
  kill(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Start a real uns-bridge process on ephemeral loopback ports with its own data folder
 * (removed on stop unless the caller passed one). With `tls`, it serves its HTTP API over https
 * only and adds an MQTT-over-TLS listener, both with that certificate.
 */
export async function startInstance({
  dataDir,
  args = [],
  env = {},
  tls,
}: {
  dataDir?: string
  args?: string[]
  env?: Record<string, string>
  tls?: { cert: string; key: string }
} = {}): Promise<Instance> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'ub-inst-'))
  const onPostgres = args.includes('--database-url') || env.UB_DATABASE_URL || env.DATABASE_URL
  if (!dataDir && !onPostgres) seedPglite(dir)
  if (tls) {
    writeFileSync(join(dir, 'tls-cert.pem'), tls.cert)
    writeFileSync(join(dir, 'tls-key.pem'), tls.key, { mode: 0o600 })
    args = [
      ...['--http-tls', '--mqtt-tls-port', '0'],
      ...['--tls-cert', join(dir, 'tls-cert.pem'), '--tls-key', join(dir, 'tls-key.pem')],
      ...args,
    ]
  }
  const adminToken = env.UB_ADMIN_TOKEN ?? 'ubt_test_' + randomBytes(12).toString('hex')
  const cleanup = () => {
    if (!dataDir) rmSync(dir, { recursive: true, force: true })
  }
  // A process that never became ready leaves no folder behind either.
  const launched = await launchProcess({
    args: [
      ...['--data-dir', dir, '--http-host', '127.0.0.1', '--http-port', '0'],
      ...['--mqtt-host', '127.0.0.1', '--mqtt-port', '0'],
      ...args,
    ],
    env: { UB_ADMIN_TOKEN: adminToken, ...env },
  }).catch((err: unknown) => {
    try {
      cleanup()
    } catch {
      // a process killed a moment ago may still be writing there: the launch error matters
    }
    throw err
  })
  const stop = async () => {
    const code = await launched.stop()
    cleanup()
    return code
  }
  return {
    httpUrl: launched.ready.http as string,
    mqttUrl: (launched.ready.mqtt as string | null) ?? null,
    mqttsUrl:
      ((launched.ready.endpoints as string[] | undefined) ?? [])
        .find((e) => e.startsWith('mqtts '))
        ?.slice('mqtts '.length) ?? null,
    fetch: tls ? tlsFetch({ ca: tls.cert }) : globalThis.fetch,
    instanceId: launched.ready.instanceId as string,
    adminToken,
    dataDir: dir,
    process: launched,
    output: launched.output,
    stop,
    kill: async () => {
      await launched.kill()
      cleanup()
    },
    [Symbol.asyncDispose]: async () => {
      await stop()
    },
  }
}

/** One operator API call with the instance's admin token: the status and the JSON body (or null). */
export async function apiRequest(
  inst: Instance,
  method: string,
  path: string,
  body?: unknown
): Promise<{ status: number; body: any }> {
  const res = await inst.fetch(inst.httpUrl + path, {
    method,
    headers: { authorization: `Bearer ${inst.adminToken}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

/** `apiRequest` that throws on a 4xx or 5xx and returns the body. */
export async function api(inst: Instance, method: string, path: string, body?: unknown) {
  const res = await apiRequest(inst, method, path, body)
  if (res.status >= 400) {
    throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(res.body)}`)
  }
  return res.body
}
