import { createServer, connect, type AddressInfo, type Socket } from 'node:net'

/**
 * A TCP proxy on 127.0.0.1, port 0, in front of `target`. `cut()` drops every connection and
 * refuses new ones (accept, then reset at once) until `restore()`: a broken link, as a failed
 * WAN or a firewall would make it.
 */
export interface TcpProxy {
  port: number
  url(scheme?: string): string
  cut(): void
  restore(): void
  /**
   * Connections stay open but carry nothing either way (a black hole, as a stuck middlebox or a
   * peer that stopped reading makes it) until `unstall()`; bytes sent meanwhile then flow.
   */
  stall(): void
  unstall(): void
  readonly connections: number
  close(): Promise<void>
}

export async function startTcpProxy({
  targetHost = '127.0.0.1',
  targetPort,
}: {
  targetHost?: string
  targetPort: number
}): Promise<TcpProxy> {
  const open = new Set<Socket>()
  const pairs = new Set<[Socket, Socket]>()
  let down = false
  let accepted = 0
  const server = createServer((client) => {
    if (down) return void client.resetAndDestroy()
    accepted++
    const upstream = connect(targetPort, targetHost)
    open.add(client)
    open.add(upstream)
    const pair: [Socket, Socket] = [client, upstream]
    pairs.add(pair)
    const drop = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
      open.delete(client)
      open.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()))
  const port = (server.address() as AddressInfo).port
  let closing: Promise<void> | undefined
  return {
    port,
    url: (scheme = 'mqtt') => `${scheme}://127.0.0.1:${port}`,
    get connections() {
      return accepted
    },
    cut() {
      down = true
      for (const s of open) s.resetAndDestroy()
      open.clear()
    },
    restore() {
      down = false
    },
    stall() {
      for (const [c, u] of pairs) {
        c.unpipe(u)
        u.unpipe(c)
        c.pause()
        u.pause()
      }
    },
    unstall() {
      for (const [c, u] of pairs) {
        c.pipe(u)
        u.pipe(c)
      }
    },
    close: () =>
      (closing ??= new Promise<void>((res) => {
        for (const s of open) s.destroy()
        server.close(() => res())
      })),
  }
}
