import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { connect as tcpConnect, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../helpers/server-process.ts'
import { createNetns, run, sweepNetns, type Netns } from './netns.ts'
import { sleep, until } from './wait.ts'

const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server'

/** A raw NATS-protocol client, line by line: to see exactly what a partition does to one socket. */
function lineClient(host: string, port: number) {
  const socket: Socket = tcpConnect(port, host)
  socket.setEncoding('utf8')
  const lines: string[] = []
  let buffered = ''
  let failure: string | undefined
  socket.on('data', (chunk: string) => {
    buffered += chunk
    for (let i; (i = buffered.indexOf('\r\n')) >= 0; buffered = buffered.slice(i + 2)) {
      const line = buffered.slice(0, i)
      // The server pings too (its RTT probe): answered here, so `next` sees only our replies.
      if (line === 'PING') socket.write('PONG\r\n')
      else lines.push(line)
    }
  })
  socket.on('error', (err) => (failure = `error ${String(err)}`))
  socket.on('close', () => (failure ??= 'closed'))
  return {
    write: (text: string) => socket.write(text),
    /** The next line within `ms`, or undefined. */
    async next(ms: number): Promise<string | undefined> {
      await until(() => lines.length > 0 || failure !== undefined, {
        timeoutMs: ms,
        what: 'a line',
      }).catch(() => {})
      return lines.shift()
    },
    get failure() {
      return failure
    },
    close: () => socket.destroy(),
  }
}

/** How a new TCP connection ends within `ms`: `connected`, `error <code>`, or `hangs`. */
function tryConnect(host: string, port: number, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, host)
    const timer = setTimeout(() => (s.destroy(), resolve('hangs')), ms)
    s.once('connect', () => (clearTimeout(timer), s.destroy(), resolve('connected')))
    s.once(
      'error',
      (err: NodeJS.ErrnoException) => (clearTimeout(timer), resolve(`error ${err.code}`))
    )
  })
}

const ipList = async (...args: string[]) => (await run('ip', args)).stdout

/**
 * The netns helper, with real parts: a nats-server inside a namespace, clients on the host; the
 * data link partitioned and healed; the control link left alone; destroy and the sweep checked
 * against what `ip` lists.
 */
describe('network namespace partitions', () => {
  let ns: Netns
  let server: ChildProcess
  let port: number
  const clients: NatsConnection[] = []

  beforeAll(async () => {
    ns = await createNetns()
    port = await freePort() // inside the namespace every port is free; this one is not 4222
    // 0.0.0.0 in the namespace: both of its links' addresses.
    server = ns.spawn(NATS_SERVER_BIN, ['-a', '0.0.0.0', '-p', String(port)], { stdio: 'ignore' })
    await until(async () => (await tryConnect(ns.nsAddress, port, 500)) === 'connected', {
      timeoutMs: 10_000,
      what: 'nats-server inside the namespace',
    })
  })

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})))
    await ns?.destroy()
  })

  it('runs a program inside under its own pid, on the namespace addresses only', async () => {
    expect((await ipList('netns', 'pids', ns.name)).split(/\s+/)).toContain(String(server.pid))
    const addrs = (await ns.exec('ip', ['-4', '-o', 'addr', 'show'])).stdout
    expect(addrs).toContain(`inet ${ns.nsAddress}/30`)
    expect(addrs).toContain(`inet ${ns.controlNsAddress}/30`)
    expect(addrs).toContain('inet 127.0.0.1/8') // its own loopback, up
    expect(addrs).not.toContain(ns.hostAddress)
    await expect(ns.exec('ip', ['link', 'show', 'nosuchlink'])).rejects.toThrow(
      /`ip netns exec ubc[0-9a-f]{4}-\d+ ip link show nosuchlink` failed \(exit 1\)/
    )
  })

  it('partition stalls traffic silently both ways; heal lets that connection go on', async () => {
    const raw = lineClient(ns.nsAddress, port)
    expect(await raw.next(3_000)).toMatch(/^INFO /)
    raw.write('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
    expect(await raw.next(3_000)).toBe('PONG')

    // A client whose keep-alive is quick, through the data link, and one through the control link.
    const probe = await natsConnect({
      servers: `nats://${ns.nsAddress}:${port}`,
      pingInterval: 300,
      maxPingOut: 2,
      timeout: 1_000,
      reconnectTimeWait: 300,
      maxReconnectAttempts: -1,
    })
    const observer = await natsConnect({ servers: `nats://${ns.controlNsAddress}:${port}` })
    clients.push(probe, observer)
    const events: string[] = []
    void (async () => {
      for await (const s of probe.status()) events.push(s.type)
    })()
    observer.subscribe('echo', { callback: (_err, msg) => void msg.respond(msg.data) })
    await observer.flush()
    expect((await probe.request('echo', 'before', { timeout: 2_000 })).string()).toBe('before')

    await ns.partition()
    expect(ns.partitioned).toBe(true)
    const partitionedAt = Date.now()
    raw.write('PING\r\n')
    const [reply, fresh, probeRequest] = await Promise.all([
      raw.next(2_500),
      tryConnect(ns.nsAddress, port, 1_500),
      probe.request('echo', 'during', { timeout: 1_500 }).then(
        () => 'answered',
        (err: Error) => err.message
      ),
    ])
    expect(reply, 'no PONG gets through').toBeUndefined()
    expect(raw.failure, 'no RST, no ICMP error: the socket just waits').toBeUndefined()
    expect(fresh, 'a new connection gets no SYN-ACK and no RST').toBe('hangs')
    expect(probeRequest).not.toBe('answered')
    await until(() => events.includes('staleConnection'), {
      timeoutMs: 3_000,
      what: 'the keep-alive to notice the silence',
    })
    // The control link is another path: it carries on through the partition.
    const viaControl = await observer.request('echo', 'control', { timeout: 2_000 })
    expect(viaControl.string()).toBe('control')
    expect(Date.now() - partitionedAt).toBeLessThan(8_000)

    await ns.heal()
    expect(ns.partitioned).toBe(false)
    // TCP retransmits the PING (backed off, so give it a few seconds): the same socket goes on.
    expect(await raw.next(10_000)).toBe('PONG')
    expect(raw.failure).toBeUndefined()
    await until(() => events.includes('reconnect'), {
      timeoutMs: 10_000,
      what: 'the probe to reconnect after heal',
    })
    expect((await probe.request('echo', 'after', { timeout: 2_000 })).string()).toBe('after')
    raw.close()
    await ns.heal() // idempotent
  }, 30_000)

  it('the sweep removes a crashed run’s namespace and stray veths, not a live run’s', async () => {
    const dead = spawnSync('true').pid!
    // Blocks past createNetns's 8192: never a live namespace's.
    const block = randomInt(0x2000, 0xffff).toString(16)
    const crashed = `ubc${block}-${dead}`
    await run('ip', ['netns', 'add', crashed])
    await run('ip', [
      'link',
      'add',
      `ubc${block}-h`,
      'type',
      'veth',
      'peer',
      'name',
      'x',
      'netns',
      crashed,
    ])
    const orphan = spawn('ip', ['netns', 'exec', crashed, 'sleep', '60'], { stdio: 'ignore' })
    const orphanGone = new Promise((r) => orphan.once('exit', r))
    const strayBlock = (parseInt(block, 16) ^ 1).toString(16).padStart(4, '0')
    await run('ip', [
      'link',
      'add',
      `ubc${strayBlock}-ch`,
      'type',
      'veth',
      'peer',
      'name',
      `ubc${strayBlock}-x`,
    ])
    await until(async () => (await ipList('netns', 'pids', crashed)).trim() !== '', {
      timeoutMs: 5_000,
      what: 'the orphan to run inside',
    })

    const removed = await sweepNetns()
    expect(removed).toEqual(expect.arrayContaining([crashed, `ubc${strayBlock}-ch`]))
    expect(removed).not.toContain(ns.name)
    await orphanGone
    const names = await ipList('netns', 'list')
    expect(names).not.toContain(crashed)
    expect(names).toContain(ns.name)
    const links = await ipList('-o', 'link', 'show')
    expect(links).not.toMatch(new RegExp(`ubc(${block}|${strayBlock})-`))
    expect(links).toContain(ns.hostInterfaces[0])
  })

  it('destroy ends what runs inside, leaves no namespace, link, address, neighbour', async () => {
    const exited = new Promise((r) => server.once('exit', r))
    await ns.partition() // a partitioned namespace is the hardest to leave clean
    await ns.destroy()
    await exited
    await ns.destroy() // idempotent
    expect(await ipList('netns', 'list')).not.toContain(ns.name)
    const links = await ipList('-o', 'link', 'show')
    for (const link of ns.hostInterfaces) expect(links).not.toContain(link)
    // Whole addresses only: a parallel run may hold 10.213.x.17 beside our 10.213.x.1.
    const exact = (addr: string) => new RegExp(`\\b${addr.replaceAll('.', '\\.')}\\b`)
    const addrs = await ipList('-4', '-o', 'addr', 'show')
    const routes = await ipList('-4', 'route', 'show', 'table', 'all')
    for (const addr of [ns.hostAddress, ns.controlHostAddress]) {
      expect(addrs).not.toMatch(exact(addr))
      expect(routes).not.toMatch(exact(addr))
    }
    expect(await ipList('neigh', 'show')).not.toMatch(exact(ns.nsAddress))
  })
})
