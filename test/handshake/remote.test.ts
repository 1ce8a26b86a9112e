import { createServer, type Server } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { createRemoteClient, RemoteError } from '../../services/contracts/handshake-client.ts'

/** The downstream's HTTP client against upstream servers that misbehave. */
describe('remote client', () => {
  let server: Server | undefined
  afterEach(async () => {
    server?.closeAllConnections()
    await new Promise((r) => (server ? server.close(r) : r(undefined)))
    server = undefined
  })

  async function serve(handler: Parameters<typeof createServer>[1]): Promise<number> {
    server = createServer(handler)
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r))
    return (server.address() as { port: number }).port
  }

  const body = { instanceId: 'UB_x', secretHash: 'a'.repeat(64) }

  it('refuses an answer that is not the expected JSON', async () => {
    const port = await serve((_req, res) =>
      res.writeHead(202, { 'content-type': 'text/html' }).end('<html>')
    )
    const err = await createRemoteClient()
      .sendRequest({ host: 'mqtt://127.0.0.1', httpPort: port }, body)
      .catch((e) => e)
    expect(err).toBeInstanceOf(RemoteError)
    expect(err.message).toMatch(/unexpected body/)
  })

  it('stops reading a huge answer', async () => {
    const port = await serve((_req, res) => {
      res.writeHead(202, { 'content-type': 'application/json' })
      res.end('{"requestId":"' + 'x'.repeat(2_000_000) + '","status":"Pending"}')
    })
    const err = await createRemoteClient()
      .sendRequest({ host: 'mqtt://127.0.0.1', httpPort: port }, body)
      .catch((e) => e)
    expect(err).toBeInstanceOf(RemoteError)
  })

  it('gives up on a server that never answers', async () => {
    const port = await serve(() => {
      // never answer
    })
    const err = await createRemoteClient({ timeoutMs: 200 })
      .getStatus({ host: 'mqtt://127.0.0.1', httpPort: port }, 'rq_1', 's')
      .catch((e) => e)
    expect(err).toMatchObject({ code: 'upstream_unreachable', status: null })
  })

  it('carries the status and error code of a refusal', async () => {
    const port = await serve((_req, res) =>
      res
        .writeHead(401, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { code: 'unauthorized', message: 'wrong secret' } }))
    )
    const err = await createRemoteClient()
      .getStatus({ host: 'ws://127.0.0.1', httpPort: port }, 'rq_1', 's')
      .catch((e) => e)
    expect(err).toMatchObject({ code: 'upstream_error', status: 401 })
    expect(err.message).toMatch(/401 \(unauthorized: wrong secret\)/)
  })
})
