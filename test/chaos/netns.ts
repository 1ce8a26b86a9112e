import {
  execFile,
  spawn as spawnChild,
  spawnSync,
  type ChildProcess,
  type SpawnOptions,
} from 'node:child_process'
import { randomInt } from 'node:crypto'
import { connect } from 'node:net'
import { processAlive } from '../../services/launch/data-lock.ts'

/**
 * A network namespace of the chaos harness, joined to the host by two veth pairs:
 *
 * - the data link, which `partition()` cuts: what a fault isolates (the cloud broker's address,
 *   a gateway's way to NATS);
 * - the control link, never cut: for the harness's own observers (the counting subscriber, a
 *   gateway's MQTT clients when only its NATS traffic is to be cut).
 *
 * A partition drops every frame on the data link silently, both ways: each end's neighbour entry
 * for the other is pinned to a MAC address no interface has, so the peer discards the frames as
 * meant for another host. No RST, no ICMP: open TCP connections hang and retransmit, new ones
 * get no SYN-ACK, as when a cable or a WAN link is gone. (This needs nothing but iproute2: this
 * kernel has neither netem nor tc's drop action, and no iptables tool is installed.) Healing
 * removes the pinned entries; ARP finds the real address again and TCP's next retransmission
 * goes through.
 */
export interface Netns {
  /** `ubc<block>-<pid of the creating process>`: a sweep tells a leftover by its dead pid. */
  name: string
  /** The data link: host side and namespace side of a /30. */
  hostAddress: string
  nsAddress: string
  /** The control link: host side and namespace side of another /30. */
  controlHostAddress: string
  controlNsAddress: string
  /** Host-side interface names (data, control). */
  hostInterfaces: [string, string]
  /** The command prefix that runs a program inside: `ip netns exec <name>`. */
  wrap: string[]
  readonly partitioned: boolean
  /** Run a command inside and resolve with its output; rejects naming the command. */
  exec(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }>
  /** Start a program inside; its pid is the program's own (`ip netns exec` execs it). */
  spawn(cmd: string, args: string[], options?: SpawnOptions): ChildProcess
  /** Drop every frame on the data link, both ways, silently. Idempotent. */
  partition(): Promise<void>
  /** Let the data link carry traffic again. Idempotent. */
  heal(): Promise<void>
  /** Kill what still runs inside, remove both links and the namespace. Idempotent. */
  destroy(): Promise<void>
}

export const NETNS_PREFIX = 'ubc'
/** 10.213.0.0/16, cut into /29 blocks: one per namespace (data /30, then control /30). */
const BASE = [10, 213] as const
const BLOCKS = 8_192
/** Locally administered, and no interface has it: frames sent to it are dropped by the peer. */
const NOWHERE_MAC = '02:75:62:63:00:00'
const OWN_NAME = /^ubc([0-9a-f]{4})-(\d+)$/
const OWN_LINK = /^ubc([0-9a-f]{4})-c?h$/

interface Output {
  stdout: string
  stderr: string
}

/** Run a command; a failure names the command, its exit code and its stderr. */
export function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<Output> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr })
      const how = err.killed ? `killed after ${timeoutMs} ms` : `exit ${String(err.code)}`
      const detail = stderr.trim() || err.message
      reject(new Error(`\`${[cmd, ...args].join(' ')}\` failed (${how}): ${detail}`))
    })
  })
}

/** Whether a TCP connection to host:port is accepted within `timeoutMs`. */
export function accepts(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host)
    const done = (ok: boolean) => (clearTimeout(timer), socket.destroy(), resolve(ok))
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

const ip = (...args: string[]) => run('ip', args)
/** `ip` for removals: a thing already gone is what we wanted. */
const ipGone = (...args: string[]) =>
  ip(...args).catch((err: Error) => {
    if (!/Cannot find device|No such file|does not exist|not found/i.test(err.message)) throw err
  })

function blockAddresses(block: number) {
  const third = block >> 5
  const fourth = (block & 31) * 8
  const at = (n: number) => `${BASE[0]}.${BASE[1]}.${third}.${fourth + n}`
  return { network: at(0), host: at(1), ns: at(2), controlHost: at(5), controlNs: at(6) }
}

const toInt = (a: string) => a.split('.').reduce((n, octet) => n * 256 + Number(octet), 0)

/** Whether a /29 overlaps any IPv4 address or route the host has (our own included). */
async function blockFree(network: string): Promise<boolean> {
  const [addrs, routes] = await Promise.all([
    ip('-4', '-o', 'addr', 'show'),
    ip('-4', '-o', 'route', 'show', 'table', 'all'),
  ])
  const prefixes = [
    ...[...addrs.stdout.matchAll(/inet (\d+\.\d+\.\d+\.\d+)\/(\d+)/g)].map((m) => [m[1]!, m[2]!]),
    ...routes.stdout
      .split('\n')
      .map((line) => /^(?:\w+ )?(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?\s/.exec(line))
      .filter((m) => m !== null)
      .map((m) => [m[1]!, m[2] ?? '32']),
  ]
  const ours = toInt(network)
  return prefixes.every(([addr, len]) => {
    // Two prefixes overlap when the shorter one holds the other's network address.
    const bits = Math.min(Number(len), 29)
    if (bits === 0) return true // a default route holds everything and says nothing
    const mask = ~(0xffffffff >>> bits) >>> 0
    return (toInt(addr!) & mask) >>> 0 !== (ours & mask) >>> 0
  })
}

/** Namespaces this process made, with the host links it owns (none until its veth is made). */
const live = new Map<string, string[]>()
let exitHook = false
let swept: Promise<string[]> | undefined

/**
 * A namespace with its two links up and addressed, in a /29 of 10.213.0.0/16 that no address or
 * route of the host overlaps. Creating the host's veth is the claim on a block: a parallel run
 * that picked the same one fails with "File exists" and picks again.
 */
export async function createNetns(): Promise<Netns> {
  swept ??= sweepNetns().catch(() => [])
  await swept
  for (let attempt = 0; attempt < 20; attempt++) {
    const block = randomInt(BLOCKS)
    const a = blockAddresses(block)
    if (!(await blockFree(a.network))) continue
    const id = `${NETNS_PREFIX}${block.toString(16).padStart(4, '0')}`
    const name = `${id}-${process.pid}`
    const links = { host: `${id}-h`, ns: `${id}-n`, controlHost: `${id}-ch`, controlNs: `${id}-cn` }
    await ip('netns', 'add', name)
    live.set(name, [])
    hookExit()
    try {
      // The namespace exists first: a sweep never takes a live run's veth for a stray one.
      await ip('link', 'add', links.host, 'type', 'veth', 'peer', 'name', links.ns, 'netns', name)
    } catch (err) {
      // Another run's veth (the block is taken) is not ours to remove: only our namespace goes.
      await ipGone('netns', 'del', name)
      live.delete(name)
      if (/File exists/.test(String(err))) continue
      throw err
    }
    live.set(name, [links.host, links.controlHost])
    const ns = makeNetns(name, a, links)
    try {
      await configure(name, a, links)
    } catch (err) {
      await ns.destroy()
      throw err
    }
    return ns
  }
  throw new Error(`no free /29 in ${BASE.join('.')}.0.0/16 after 20 tries`)
}

type Addresses = ReturnType<typeof blockAddresses>
type Links = { host: string; ns: string; controlHost: string; controlNs: string }

async function configure(name: string, a: Addresses, links: Links) {
  const { controlHost, controlNs } = links
  await ip('link', 'add', controlHost, 'type', 'veth', 'peer', 'name', controlNs, 'netns', name)
  for (const [hostIf, nsIf, hostAddr, nsAddr] of [
    [links.host, links.ns, a.host, a.ns],
    [controlHost, controlNs, a.controlHost, a.controlNs],
  ] as const) {
    await ip('addr', 'add', `${hostAddr}/30`, 'dev', hostIf)
    await ip('-n', name, 'addr', 'add', `${nsAddr}/30`, 'dev', nsIf)
    await ip('link', 'set', hostIf, 'up')
    await ip('-n', name, 'link', 'set', nsIf, 'up')
  }
  await ip('-n', name, 'link', 'set', 'lo', 'up')
}

function makeNetns(name: string, a: Addresses, links: Links): Netns {
  let partitioned = false
  const wrap = ['ip', 'netns', 'exec', name]
  // Each end's neighbour entry for the other: pinned to nowhere by partition(), gone at heal().
  const ends = [
    { inside: [], peer: a.ns, dev: links.host },
    { inside: ['-n', name], peer: a.host, dev: links.ns },
  ]
  return {
    name,
    hostAddress: a.host,
    nsAddress: a.ns,
    controlHostAddress: a.controlHost,
    controlNsAddress: a.controlNs,
    hostInterfaces: [links.host, links.controlHost],
    wrap,
    get partitioned() {
      return partitioned
    },
    exec: (cmd, args) => run(wrap[0]!, [...wrap.slice(1), cmd, ...args]),
    spawn: (cmd, args, options = {}) =>
      spawnChild(wrap[0]!, [...wrap.slice(1), cmd, ...args], options),
    async partition() {
      for (const { inside, peer, dev } of ends) {
        await ip(
          ...inside,
          'neigh',
          'replace',
          peer,
          'lladdr',
          NOWHERE_MAC,
          'nud',
          'permanent',
          'dev',
          dev
        )
      }
      partitioned = true
    },
    async heal() {
      for (const { inside, peer, dev } of ends)
        await ipGone(...inside, 'neigh', 'del', peer, 'dev', dev)
      partitioned = false
    },
    async destroy() {
      await removeNetns(name, links.host, links.controlHost)
      live.delete(name)
    },
  }
}

/** Kill what runs inside (else the namespace and its veths outlive its name), then remove all. */
async function removeNetns(name: string, ...hostLinks: string[]) {
  const exists = (await ip('netns', 'list')).stdout
    .split('\n')
    .some((l) => l.split(' ')[0] === name)
  if (exists) {
    for (let i = 0; i < 50; i++) {
      const pids = await ipPids(name)
      if (!pids.length) break
      for (const pid of pids) killQuietly(pid)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  for (const link of hostLinks) await ipGone('link', 'del', link)
  await ipGone('netns', 'del', name)
}

async function ipPids(name: string): Promise<number[]> {
  const { stdout } = await ip('netns', 'pids', name).catch(() => ({ stdout: '' }))
  return stdout.split(/\s+/).filter(Boolean).map(Number)
}

function killQuietly(pid: number) {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // gone already
  }
}

/**
 * Remove what crashed runs left: `ubc` namespaces whose creating process is gone (and whatever
 * still runs in them), and host-side `ubc` veths whose namespace is gone. A live run's are kept.
 * Resolves with what it removed.
 */
export async function sweepNetns(): Promise<string[]> {
  // Links first: a live run adds its namespace before its veth, so the later list holds it.
  const links = [...(await ip('-o', 'link', 'show')).stdout.matchAll(/^\d+: ([^:@\s]+)/gm)]
  const names = (await ip('netns', 'list')).stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean)
  const removed: string[] = []
  for (const name of names) {
    const m = OWN_NAME.exec(name)
    if (!m || processAlive(Number(m[2]))) continue
    await removeNetns(name, `ubc${m[1]}-h`, `ubc${m[1]}-ch`)
    removed.push(name)
  }
  // A removed namespace took its links along; a live one keeps them.
  const blocks = new Set(names.map((n) => n.slice(0, 7)))
  for (const [, link] of links) {
    const m = OWN_LINK.exec(link!)
    if (!m || blocks.has(`ubc${m[1]}`)) continue
    await ipGone('link', 'del', link!)
    removed.push(link!)
  }
  return removed
}

/** A process that exits without destroy() (a failed test, an uncaught error) still cleans up. */
function hookExit() {
  if (exitHook) return
  exitHook = true
  process.once('exit', () => {
    for (const [name, links] of live) {
      const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout ?? ''
      for (const pid of pids.split(/\s+/).filter(Boolean)) killQuietly(Number(pid))
      for (const link of links) spawnSync('ip', ['link', 'del', link])
      spawnSync('ip', ['netns', 'del', name])
    }
  })
}
