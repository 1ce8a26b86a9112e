/**
 * A small TCP load balancer for MQTT in front of the gateways, for `deploy/cluster.ts` on one
 * machine (deploy/haproxy.cfg is the production one, and works alike): each new connection goes
 * to the backend with the fewest open connections among those that are up. A backend that refuses
 * or does not answer a connect is down (the connection tries the next) until a periodic connect
 * probe reaches it again. Bytes are piped both ways; when either side closes, both do.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'

export interface BalancerBackend {
  host: string
  port: number
}

export interface BackendStats {
  /** `host:port` */
  address: string
  up: boolean
  /** Connections open now (those still connecting included). */
  open: number
  /** Connections made to it since start. */
  total: number
  /** Connects for clients that failed (failed probes are not counted). */
  failures: number
}

export interface BalancerStats {
  /** Client connections open now. */
  open: number
  /** Clients accepted since start (refused ones not counted). */
  accepted: number
  /** Clients closed at once: `maxConnections` were open. */
  refused: number
  /** Clients closed because no backend took them (all down, or every one failed). */
  unserved: number
  backends: BackendStats[]
}

export interface TcpBalancer {
  host: string
  port: number
  /** `<scheme>://<host>:<port>`, mqtt by default. */
  url(scheme?: string): string
  stats(): BalancerStats
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface TcpBalancerOptions {
  backends: BalancerBackend[]
  host?: string
  /** 0 (the default) picks a free one. */
  port?: number
  /** Clients beyond this many open ones are closed at once and counted as refused. */
  maxConnections?: number
  /** A connect not answered in this long fails (a backend that drops packets). */
  connectTimeoutMs?: number
  /** How often a down backend is probed with a connect. */
  probeEveryMs?: number
}

interface Backend extends BalancerBackend, BackendStats {
  probing: boolean
}

/**
 * The policy: the up backend not tried yet with the fewest open connections; ties go to the one
 * that took fewer in all, then to the first listed. Undefined when none is left.
 */
export function pickBackend<B extends { up: boolean; open: number; total: number }>(
  backends: readonly B[],
  tried: ReadonlySet<B> = new Set()
): B | undefined {
  let best: B | undefined
  for (const b of backends) {
    if (!b.up || tried.has(b)) continue
    if (!best || b.open < best.open || (b.open === best.open && b.total < best.total)) best = b
  }
  return best
}

/** What the connections of one balancer share. */
interface Pool {
  backends: Backend[]
  /** Every socket open now, both sides: close() destroys them. */
  sockets: Set<Socket>
  counts: { open: number; accepted: number; refused: number; unserved: number }
  connectTimeoutMs: number
}

export async function startTcpBalancer({
  backends: targets,
  host = '127.0.0.1',
  port = 0,
  maxConnections = 10_000,
  connectTimeoutMs = 2_000,
  probeEveryMs = 1_000,
}: TcpBalancerOptions): Promise<TcpBalancer> {
  const pool: Pool = {
    backends: targets.map((t) => ({
      host: t.host,
      port: t.port,
      address: `${t.host}:${t.port}`,
      up: true,
      open: 0,
      total: 0,
      failures: 0,
      probing: false,
    })),
    sockets: new Set(),
    counts: { open: 0, accepted: 0, refused: 0, unserved: 0 },
    connectTimeoutMs,
  }
  const { counts, sockets } = pool
  const server = createServer((client) => {
    if (counts.open >= maxConnections) {
      counts.refused++
      client.destroy()
      return
    }
    counts.open++
    counts.accepted++
    sockets.add(client)
    client.setNoDelay(true)
    // A reset while connecting or piping: the 'close' that follows is what counts.
    client.on('error', () => {})
    client.once('close', () => {
      counts.open--
      sockets.delete(client)
    })
    void serve(pool, client)
  })
  const probe = setInterval(() => probeDown(pool), probeEveryMs)
  probe.unref()

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  const bound = (server.address() as AddressInfo).port
  let closing: Promise<void> | undefined
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      clearInterval(probe)
      server.close(() => resolve())
      for (const s of sockets) s.destroy()
      sockets.clear()
    }))
  return {
    host,
    port: bound,
    url: (scheme = 'mqtt') => `${scheme}://${host}:${bound}`,
    stats: () => ({
      ...counts,
      backends: pool.backends.map(({ address, up, open, total, failures }) => ({
        address,
        up,
        open,
        total,
        failures,
      })),
    }),
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** Try the backends in policy order until one takes the client; close it when none does. */
async function serve(pool: Pool, client: Socket): Promise<void> {
  const tried = new Set<Backend>()
  for (
    let backend = pickBackend(pool.backends, tried);
    backend;
    backend = pickBackend(pool.backends, tried)
  ) {
    tried.add(backend)
    backend.open++ // before the connect, so clients arriving meanwhile spread
    const upstream = await reach(pool, backend, client)
    if (upstream && !client.destroyed) return join(pool, client, upstream, backend)
    backend.open--
    if (upstream) pool.sockets.delete(upstream)
    upstream?.destroy()
    if (client.destroyed) return
  }
  pool.counts.unserved++
  client.destroy()
}

/**
 * Connect to a backend for a client (or for a probe, without one); resolves to the socket, or to
 * undefined when the connect failed (the backend is down then) or the client left meanwhile.
 */
function reach(pool: Pool, backend: Backend, client?: Socket): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const upstream = connect({ host: backend.host, port: backend.port })
    pool.sockets.add(upstream)
    let settled = false
    const settle = (ok: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      upstream.off('error', failed).off('close', failed).off('connect', connected)
      client?.off('close', abandoned)
      if (!ok) {
        pool.sockets.delete(upstream)
        upstream.destroy()
      }
      resolve(ok ? upstream : undefined)
    }
    const failed = () => {
      if (client) backend.failures++
      backend.up = false
      settle(false)
    }
    const connected = () => settle(true)
    // The client left while we connected for it: not the backend's fault.
    const abandoned = () => settle(false)
    const timer = setTimeout(failed, pool.connectTimeoutMs)
    upstream.once('error', failed).once('close', failed).once('connect', connected)
    client?.once('close', abandoned)
  })
}

/** Pipe both ways; both sockets live and die together, and the backend's count follows. */
function join(pool: Pool, client: Socket, upstream: Socket, backend: Backend): void {
  backend.total++
  upstream.setNoDelay(true)
  let done = false
  const closeBoth = (hadError: boolean) => {
    if (done) return
    done = true
    backend.open--
    pool.sockets.delete(upstream)
    // A clean close lets what is in flight reach the other side first; an error cuts both.
    for (const s of [client, upstream]) hadError ? s.destroy() : s.end(() => s.destroy())
  }
  upstream.on('error', () => closeBoth(true)).on('close', closeBoth)
  client.on('close', closeBoth)
  client.pipe(upstream)
  upstream.pipe(client)
}

/** A down backend that accepts a connect again is up. */
function probeDown(pool: Pool): void {
  for (const backend of pool.backends) {
    if (backend.up || backend.probing) continue
    backend.probing = true
    void reach(pool, backend).then((socket) => {
      backend.probing = false
      if (!socket) return
      pool.sockets.delete(socket)
      socket.destroy()
      backend.up = true
    })
  }
}
