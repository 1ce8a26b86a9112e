import { connect, createServer, type Socket } from 'node:net'

const TLS_HANDSHAKE_RECORD = 0x16 // the first byte of every TLS ClientHello

export interface TlsSniffer {
  port: number
  /** Connections that opened with a TLS handshake and were passed through. */
  tlsConnections(): number
  /** Every byte that arrived on a connection that did not open with TLS, as text. */
  plaintext(): string
  close(): Promise<void>
}

/**
 * A port in front of an https server: TLS connections pass through to `target`, anything else is
 * recorded and refused. A test points a client at it to prove the client never speaks plain
 * HTTP (and so never sends a secret in the clear) to a server that serves https only.
 */
export async function startTlsSniffer(target: { host: string; port: number }): Promise<TlsSniffer> {
  let tls = 0
  const plain: Buffer[] = []
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    sockets.add(client)
    client.on('close', () => sockets.delete(client))
    client.on('error', () => client.destroy())
    client.once('data', (first: Buffer) => {
      if (first[0] === TLS_HANDSHAKE_RECORD) {
        tls += 1
        const upstream = connect(target.port, target.host, () => {
          upstream.write(first)
          client.pipe(upstream)
          upstream.pipe(client)
        })
        sockets.add(upstream)
        upstream.on('close', () => {
          sockets.delete(upstream)
          client.destroy()
        })
        upstream.on('error', () => client.destroy())
        client.on('close', () => upstream.destroy())
        return
      }
      plain.push(first)
      client.on('data', (more: Buffer) => plain.push(more))
      client.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as { port: number }).port,
    tlsConnections: () => tls,
    plaintext: () => Buffer.concat(plain).toString('latin1'),
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
