import { createServer, type AddressInfo } from 'node:net'

/** A free TCP port on 127.0.0.1 (closed again: the server that needs it binds it next). */
export async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((res, rej) => {
    srv.once('error', rej)
    srv.listen(0, '127.0.0.1', () => res())
  })
  const { port } = srv.address() as AddressInfo
  await new Promise<void>((res) => srv.close(() => res()))
  return port
}
