import { createServer, connect, type AddressInfo, type Socket } from 'node:net'

/**
 * How a cut link behaves. `silent`: a WAN that stops carrying packets. Nothing is forwarded and
 * nobody is told: open connections stall (what was sent waits, as TCP's retransmissions would,
 * and flows on at restore if neither end gave up), new ones are accepted but never reach the
 * target (a client's connect times out) and are reset at restore. `reset`: a firewall that
 * rejects: every connection is reset and new ones are reset at once.
 */
export type CutMode = 'silent' | 'reset'

/**
 * A TCP proxy on 127.0.0.1, port 0, in front of `target`: the link between the fabric and a
 * broker, which `cut()` breaks until `restore()`. test/helpers/tcp-proxy.ts only resets.
 */
export interface LinkProxy {
  port: number
  /** Connections accepted so far. */
  readonly connections: number
  /** Connections open now (forwarding or stalled). */
  readonly open: number
  cut(mode: CutMode): void
  restore(): void
  close(): Promise<void>
}

interface Pair {
  client: Socket
  /** Unset for a connection accepted while cut: it never reached the target. */
  upstream?: Socket
  /** One end went away while the link was cut silently: the other learns it at restore. */
  broken: boolean
}

export async function startLinkProxy({
  targetHost = '127.0.0.1',
  targetPort,
}: {
  targetHost?: string
  targetPort: number
}): Promise<LinkProxy> {
  const pairs = new Set<Pair>()
  let cut: CutMode | null = null
  let accepted = 0
  const drop = (pair: Pair) => {
    pair.client.destroy()
    pair.upstream?.destroy()
    pairs.delete(pair)
  }
  const reset = (pair: Pair) => {
    for (const s of [pair.client, pair.upstream]) if (s && !s.destroyed) s.resetAndDestroy()
    pairs.delete(pair)
  }
  const onGone = (pair: Pair) => () => (cut === 'silent' ? (pair.broken = true) : drop(pair))
  const forward = (pair: Pair) => {
    pair.client.pipe(pair.upstream!)
    pair.upstream!.pipe(pair.client)
  }
  const server = createServer((client) => {
    if (cut === 'reset') return void client.resetAndDestroy()
    accepted++
    const pair: Pair = { client, broken: false }
    pairs.add(pair)
    client.on('error', onGone(pair)).on('close', onGone(pair))
    if (cut === 'silent') return void client.pause()
    pair.upstream = connect(targetPort, targetHost)
    pair.upstream.on('error', onGone(pair)).on('close', onGone(pair))
    forward(pair)
  })
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()))
  let closing: Promise<void> | undefined
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return accepted
    },
    get open() {
      return pairs.size
    },
    cut(mode) {
      cut = mode
      for (const pair of [...pairs]) {
        if (mode === 'reset') {
          reset(pair)
          continue
        }
        // Not read, so not forwarded: what arrives stays in the socket buffers, and past
        // them the sender's writes back up, as behind a link that carries nothing.
        pair.client.unpipe()
        pair.upstream?.unpipe()
        pair.client.pause()
        pair.upstream?.pause()
      }
    },
    restore() {
      const was = cut
      cut = null
      if (was !== 'silent') return
      for (const pair of [...pairs]) {
        // A connection that never got through, or whose other end left: the packets that
        // flow again meet a socket that is gone, and TCP answers with a reset.
        if (!pair.upstream || pair.broken) reset(pair)
        else forward(pair)
      }
    },
    close: () =>
      (closing ??= new Promise<void>((res) => {
        for (const pair of [...pairs]) drop(pair)
        server.close(() => res())
      })),
  }
}
