import { createServer, type Server } from 'node:net'
import type { Config } from '../common/config.ts'
import { ConfigError } from '../common/errors.ts'
import { readTlsMaterial, type PemMaterial } from '../common/pem.ts'

/**
 * What a start can check before any service runs: the TLS files it was told to use and the
 * ports it was told to listen on. A mistake there should cost a second, not the store's
 * migration and the gateway's start first (PGlite alone takes seconds), and should not leave
 * a half-started process announcing itself on the bus.
 */
export async function preflight(
  config: Config,
  explicit: ReadonlySet<string>,
  wants: ReadonlySet<string>
): Promise<{ httpTls: PemMaterial | undefined }> {
  const httpTls = config.httpTls ? readTlsMaterial(config, 'httpTls') : undefined
  if (wants.has('gateway')) {
    // The gateway reads them again when it starts its listeners; this only fails earlier.
    if (config.mqttTlsPort !== undefined) readTlsMaterial(config, 'mqttTlsPort')
    if (config.mqttWssPort !== undefined) readTlsMaterial(config, 'mqttWssPort')
  }
  await checkPortsFree(explicitPorts(config, explicit, wants))
  return { httpTls }
}

interface WantedPort {
  key: string
  host: string
  port: number
}

/**
 * The ports set by the user. Defaults are left out on purpose: a taken default falls back to a
 * free port with a warning (listen.ts), so `npm start` works next to a local Mosquitto; port 0
 * is always free.
 */
function explicitPorts(
  config: Config,
  explicit: ReadonlySet<string>,
  wants: ReadonlySet<string>
): WantedPort[] {
  const wanted: WantedPort[] = []
  const add = (key: string, host: string, port: number | undefined) => {
    if (port !== undefined && port !== 0 && explicit.has(key)) wanted.push({ key, host, port })
  }
  add('httpPort', config.httpHost, config.httpPort)
  if (wants.has('gateway')) {
    add('mqttPort', config.mqttHost, config.mqttPort)
    add('mqttWsPort', config.mqttHost, config.mqttWsPort)
    add('mqttTlsPort', config.mqttHost, config.mqttTlsPort)
    add('mqttWssPort', config.mqttHost, config.mqttWssPort)
  }
  return wanted
}

const bind = (host: string, port: number): Promise<Server> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ host, port, exclusive: true }, () => resolve(server))
  })

/**
 * Bind each wanted port and let it go again. All are held until the last is bound, so two keys
 * given the same port are caught too. The listeners bind them for real later; a port taken in
 * between still fails there, naming its key.
 */
async function checkPortsFree(wanted: WantedPort[]): Promise<void> {
  const held: Array<{ want: WantedPort; server: Server }> = []
  try {
    for (const want of wanted) {
      try {
        held.push({ want, server: await bind(want.host, want.port) })
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? String(err)
        const twin = held.find((h) => h.want.port === want.port)?.want.key
        const why = twin
          ? `is also given to ${twin}; give each listener its own port`
          : code === 'EACCES'
            ? 'needs privileges to listen on (EACCES); choose a port above 1023'
            : code === 'EADDRINUSE'
              ? 'is already in use (EADDRINUSE); stop what holds it or choose another port'
              : `cannot be listened on (${code})`
        throw new ConfigError(want.key, `port ${want.port} on ${want.host} ${why}`, { cause: err })
      }
    }
  } finally {
    await Promise.all(held.map(({ server }) => new Promise((done) => server.close(done))))
  }
}
