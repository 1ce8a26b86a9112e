import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { pickBackend, startTcpBalancer, type TcpBalancer } from '../../deploy/tcp-balancer.ts'
import { eventually } from '../helpers/gateway.ts'

/** A backend that greets each connection with its name, then echoes what it gets. */
interface Backend {
  name: string
  port: number
  /** Its side of each open connection. */
  sockets: Set<Socket>
  /** Stop listening and drop its connections: connects to it are refused. */
  stop(): Promise<void>
  /** Listen again on the same port. */
  restart(): Promise<void>
}

async function startBackend(name: string, port = 0): Promise<Backend> {
  const sockets = new Set<Socket>()
  let server: Server
  const listen = async (at: number) => {
    server = createServer((s) => {
      sockets.add(s)
      s.on('close', () => sockets.delete(s)).on('error', () => {})
      s.write(`${name}\n`)
      s.pipe(s)
    })
    server.listen(at, '127.0.0.1')
    await once(server, 'listening')
    return (server.address() as AddressInfo).port
  }
  const bound = await listen(port)
  return {
    name,
    port: bound,
    sockets,
    async stop() {
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    },
    restart: async () => void (await listen(bound)),
  }
}

/** A client through the balancer; `greeting` is the name of the backend it reached. */
interface Client {
  socket: Socket
  greeting: Promise<string>
  closed: Promise<unknown>
  received(): string
}

function connectTo(balancer: TcpBalancer): Client {
  const socket = connect(balancer.port, '127.0.0.1')
  let data = ''
  socket.on('error', () => {})
  const greeting = new Promise<string>((resolve, reject) => {
    socket.on('data', (d: Buffer) => {
      data += d.toString()
      if (data.includes('\n')) resolve(data.slice(0, data.indexOf('\n')))
    })
    socket.once('close', () => reject(new Error(`closed before a greeting (got "${data}")`)))
  })
  greeting.catch(() => {}) // some tests expect a close instead
  return { socket, greeting, closed: once(socket, 'close'), received: () => data }
}

describe('pickBackend: least connections among the up backends', () => {
  const b = (open: number, total = 0, up = true) => ({ open, total, up })

  it('takes the fewest open, then the fewest in all, then the first listed', () => {
    const list = [b(2), b(1, 5), b(1, 3), b(1, 3)]
    expect(pickBackend(list)).toBe(list[2])
    const tied = [b(0), b(0)]
    expect(pickBackend(tied)).toBe(tied[0])
  })

  it('skips backends that are down or already tried, and gives up when none is left', () => {
    const list = [b(0, 0, false), b(3), b(4)]
    expect(pickBackend(list)).toBe(list[1])
    expect(pickBackend(list, new Set([list[1]!]))).toBe(list[2])
    expect(pickBackend(list, new Set([list[1]!, list[2]!]))).toBeUndefined()
  })
})

describe('TCP balancer over real sockets', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  const setup = async (names: string[], options: { maxConnections?: number } = {}) => {
    const backends = await Promise.all(names.map((n) => startBackend(n)))
    cleanups.push(() => Promise.all(backends.map((b) => b.stop())))
    const balancer = await startTcpBalancer({
      backends: backends.map((b) => ({ host: '127.0.0.1', port: b.port })),
      probeEveryMs: 100,
      ...options,
    })
    const clients: Client[] = []
    cleanups.push(async () => {
      for (const c of clients) c.socket.destroy()
      await balancer.close()
    })
    const client = () => {
      const c = connectTo(balancer)
      clients.push(c)
      return c
    }
    return { backends, balancer, client }
  }

  it('sends each new connection to the backend with the fewest open ones', async () => {
    const { balancer, client } = await setup(['a', 'b', 'c'])
    const first = [client(), client(), client()]
    expect((await Promise.all(first.map((c) => c.greeting))).sort()).toEqual(['a', 'b', 'c'])
    const onB = first[(await Promise.all(first.map((c) => c.greeting))).indexOf('b')]!
    onB.socket.destroy()
    await eventually(() => balancer.stats().backends[1]!.open === 0)
    expect(await client().greeting).toBe('b')
    const stats = balancer.stats()
    expect(stats.backends.map((b) => [b.open, b.total])).toEqual([
      [1, 1],
      [1, 2],
      [1, 1],
    ])
    expect(stats).toMatchObject({ open: 3, accepted: 4, refused: 0, unserved: 0 })
  })

  it('pipes both ways and closes both sides together, from either end', async () => {
    const { backends, balancer, client } = await setup(['a'])
    const c = client()
    expect(await c.greeting).toBe('a')
    c.socket.write('ping\n')
    await eventually(() => c.received() === 'a\nping\n')
    // The backend closes: the client's side closes too.
    for (const s of backends[0]!.sockets) s.end()
    await c.closed
    // The client closes: the backend's side closes too.
    const d = client()
    await d.greeting
    expect(backends[0]!.sockets.size).toBe(1)
    d.socket.end()
    await eventually(() => backends[0]!.sockets.size === 0)
    await eventually(() => balancer.stats().open === 0 && balancer.stats().backends[0]!.open === 0)
  })

  it('marks a backend that refuses down, tries the next, skips it after, and probes it back', async () => {
    const { backends, balancer, client } = await setup(['a', 'b'])
    await backends[0]!.stop()
    expect(await client().greeting).toBe('b')
    expect(balancer.stats().backends[0]).toMatchObject({ up: false, failures: 1, open: 0 })
    // Down: not tried again, though it has the fewest open connections.
    expect(await client().greeting).toBe('b')
    expect(balancer.stats().backends[0]!.failures).toBe(1)
    await backends[0]!.restart()
    await eventually(() => balancer.stats().backends[0]!.up, 5_000)
    expect(await client().greeting).toBe('a')
    expect(balancer.stats().unserved).toBe(0)
  })

  it('closes a client no backend takes, and counts it', async () => {
    const { backends, balancer, client } = await setup(['a', 'b'])
    await Promise.all(backends.map((b) => b.stop()))
    const c = client()
    await expect(c.greeting).rejects.toThrow(/closed before a greeting/)
    expect(balancer.stats()).toMatchObject({ unserved: 1, open: 0 })
    expect(balancer.stats().backends.map((b) => b.up)).toEqual([false, false])
  })

  it('refuses clients beyond maxConnections at once, and counts them', async () => {
    const { balancer, client } = await setup(['a', 'b'], { maxConnections: 2 })
    const held = [client(), client()]
    await Promise.all(held.map((c) => c.greeting))
    const third = client()
    await expect(third.greeting).rejects.toThrow(/closed before a greeting/)
    expect(balancer.stats()).toMatchObject({ open: 2, accepted: 2, refused: 1 })
    held[0]!.socket.destroy()
    await eventually(() => balancer.stats().open === 1)
    expect(await client().greeting).toMatch(/^[ab]$/)
    expect(balancer.stats()).toMatchObject({ open: 2, accepted: 3, refused: 1 })
  })
})
