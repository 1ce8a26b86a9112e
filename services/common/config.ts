import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { ConfigError } from './errors.ts'

/**
 * One validated config object. Sources, later wins: defaults < file (`--config`) < env < flags.
 * Keys are flat camelCase; each key `fooBar` is `--foo-bar` on the command line and
 * `UB_FOO_BAR` in the environment. A few keys also read the names the ecosystem uses
 * (`NATS_URL`, `DATABASE_URL`).
 */
export const SERVICE_NAMES = ['store', 'gateway', 'supervisor', 'handshake'] as const
export type ServiceName = (typeof SERVICE_NAMES)[number]

const port = z.coerce.number().int().min(0).max(65_535)
const bool = z.union([
  z.boolean(),
  z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1'),
])
const optionalString = z.string().min(1).optional()

export const configSchema = z.object({
  config: optionalString.describe('JSON config file to read'),
  dataDir: z.string().min(1).default('.data').describe('folder for PGlite and local state'),
  services: z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.enum(SERVICE_NAMES)).min(1))
    .default([...SERVICE_NAMES])
    .describe('services this process runs, comma-separated'),
  natsUrl: optionalString.describe(
    'NATS servers, comma-separated (also NATS_URL); in-process bus when absent'
  ),
  databaseUrl: optionalString.describe(
    'Postgres URL (also DATABASE_URL); PGlite in the data folder when absent'
  ),
  adminToken: z
    .string()
    .min(16)
    .optional()
    .describe('operator token; made at first start when absent'),
  busPrefix: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, 'must be one NATS token of letters, digits, - or _')
    .default('ub')
    .describe('subject prefix and bucket-name prefix on the bus'),
  logLevel: z
    .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
    .default('info')
    .describe('log level (JSON lines on stdout)'),
  httpHost: z.string().min(1).default('0.0.0.0').describe('HTTP listen address'),
  httpPort: port.default(8080).describe('HTTP API, health and metrics'),
  httpTls: bool
    .default(false)
    .describe(
      'serve the HTTP API over https with tlsCert and tlsKey (downstreams ask mqtts:// and wss:// upstreams over https)'
    ),
  mqttHost: z.string().min(1).default('0.0.0.0').describe('MQTT listen address'),
  mqttPort: port.default(1883).describe('MQTT over TCP'),
  trustProxy: bool
    .default(false)
    .describe(
      'take the client IP from the last X-Forwarded-For entry (one reverse proxy in front)'
    ),
  mqttWsPort: port.optional().describe('MQTT over WebSocket (path /mqtt and /); off when absent'),
  mqttTlsPort: port.optional().describe('MQTT over TLS; off when absent; needs tlsCert and tlsKey'),
  mqttWssPort: port
    .optional()
    .describe('MQTT over secure WebSocket; off when absent; needs tlsCert and tlsKey'),
  tlsCert: optionalString.describe('PEM certificate chain file for the TLS and WSS listeners'),
  tlsKey: optionalString.describe('PEM private key file for the TLS and WSS listeners'),
  tlsCa: optionalString.describe(
    'PEM CA file; when set, TLS clients may present certificates signed by it'
  ),
  maxPacketSize: z.coerce
    .number()
    .int()
    .min(64)
    .max(268_435_455) // the largest remaining length MQTT 3.1.1 can encode [MQTT-2.2.3]
    .default(1_048_576)
    .describe('largest MQTT packet accepted, in bytes; a bigger one closes its connection'),
  maxConnections: z.coerce
    .number()
    .int()
    .min(1)
    .default(10_000)
    .describe('MQTT clients per gateway; more get CONNACK 3'),
  maxPendingMessages: z.coerce
    .number()
    .int()
    .min(1)
    .default(10_000)
    .describe(
      'deliveries one connection may have waiting for its socket; past it the client is cut as a slow consumer'
    ),
  maxPendingBytes: z.coerce
    .number()
    .int()
    .min(1_024)
    .default(16 * 1_048_576)
    .describe('payload bytes one connection may have waiting for its socket (16 MiB)'),
  sessionMaxQueued: z.coerce
    .number()
    .int()
    .min(1)
    .default(10_000)
    .describe(
      "QoS 1/2 messages a client's persistent session may have queued, across gateways; more are not queued (counted)"
    ),
  bridgeMaxQueued: z.coerce
    .number()
    .int()
    .min(1)
    .default(1_000_000)
    .describe(
      "QoS 1 messages a bridge's local session may have queued (its backlog while the upstream is down); more are not queued"
    ),
  maxRetainedMessages: z.coerce
    .number()
    .int()
    .min(1)
    .default(100_000)
    .describe(
      'retained topics, cluster-wide (each gateway holds all in memory); past it a new one is not kept'
    ),
  maxRetainedBytes: z.coerce
    .number()
    .int()
    .min(1_024)
    .default(256 * 1_048_576)
    .describe(
      'topic and payload bytes of all retained messages (256 MiB); past it a new one is not kept'
    ),
  sessionExpirySec: z.coerce
    .number()
    .int()
    .min(0)
    .default(604_800)
    .describe(
      'seconds a persistent session may go unseen before its subscriptions and queue are erased (7 days); 0 = never; bridges exempt'
    ),
  maxInboundQos2: z.coerce
    .number()
    .int()
    .min(1)
    .max(65_535)
    .default(100)
    .describe(
      'QoS 2 PUBLISHes a client may have awaiting PUBREL (kept with payloads); one more closes its connection'
    ),
  keepAliveMin: z.coerce
    .number()
    .int()
    .min(0)
    .max(65_535)
    .default(0)
    .describe('seconds; smaller non-zero client keep-alives are raised to it'),
  keepAliveMax: z.coerce
    .number()
    .int()
    .min(0)
    .max(65_535)
    .default(0)
    .describe(
      'seconds; a larger (or zero) keep-alive gets CONNACK 2, as mosquitto max_keepalive; 0 = no bound'
    ),
  anonymous: z
    .enum(['loopback', 'always', 'never'])
    .default('loopback')
    .describe('MQTT clients without a username: from loopback addresses only, always or never'),
  users: z
    .array(
      z.object({ username: z.string().min(1), passwordHash: z.string().startsWith('scrypt$') })
    )
    .default([])
    .describe(
      'local MQTT users (config file only): [{username, passwordHash}], hashes from `hashPassword`'
    ),
  gatewayId: optionalString.describe(
    "this gateway's name in stats and metrics; made at start when absent"
  ),
  handshakePollMs: z.coerce
    .number()
    .int()
    .min(10)
    .default(3_000)
    .describe(
      'ms between the first status polls of a Pending upstream; backs off to handshakeSlowPollMs'
    ),
  handshakeSlowPollMs: z.coerce
    .number()
    .int()
    .min(10)
    .default(30_000)
    .describe(
      'ms between polls of Approved and Active upstreams (to see a revocation); the Pending backoff cap'
    ),
  handshakeRatePerMin: z.coerce
    .number()
    .min(0.1)
    .default(10)
    .describe('handshake requests per minute per source IP (token bucket); more get 429'),
  handshakeRateBurst: z.coerce
    .number()
    .int()
    .min(1)
    .default(20)
    .describe('handshake requests a source IP may send at once'),
  localBrokerUrl: optionalString.describe(
    'the gateway the bridge supervisor reads from; default mqtt://127.0.0.1:<mqttPort>'
  ),
  bridgeWindow: z.coerce
    .number()
    .int()
    .min(1)
    .max(65_000)
    .default(256)
    .describe('QoS 1 messages in flight per bridge link; 2× this many wait in memory at most'),
  leaseTtlMs: z.coerce
    .number()
    .int()
    .min(600)
    .default(3_000)
    .describe(
      'ms a bridge ownership lease lives unrenewed (renewed every third); failover takes about this long'
    ),
  backoffMaxMs: z.coerce
    .number()
    .int()
    .min(100)
    .default(30_000)
    .describe("ms cap of a bridge link's reconnect backoff"),
  bridgeDupGuard: bool
    .default(false)
    .describe(
      'drop a message seen >20 times in 200 ms on one link (stray bridge loops); off: an identical fast stream is legitimate QoS 1 data'
    ),
  topologyIntervalMs: z.coerce
    .number()
    .int()
    .min(50)
    .default(5_000)
    .describe(
      'ms between mesh topology exchanges on each handshake link; adverts live 6× this, a silent neighbour is dropped after 3×'
    ),
  meshTree: bool
    .default(true)
    .describe(
      'block bridge links that are not on the mesh spanning tree (off: topology is still exchanged, every link forwards)'
    ),
  supervisorId: optionalString.describe(
    "this supervisor replica's name in leases; unique per replica; made at start when absent"
  ),
})

export type Config = z.infer<typeof configSchema>
export type ConfigKey = keyof z.input<typeof configSchema>

/** Environment names that are read in addition to `UB_<KEY>`. */
const ENV_ALIASES: Partial<Record<ConfigKey, string>> = {
  natsUrl: 'NATS_URL',
  databaseUrl: 'DATABASE_URL',
}

export const flagName = (key: string): string =>
  '--' + key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())
export const envName = (key: string): string =>
  'UB_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase()

export interface LoadedConfig {
  config: Config
  /** Keys set by a file, the environment or a flag rather than by default. */
  explicit: ReadonlySet<string>
}

/** Parse `--key value`, `--key=value` and bare boolean `--key` into raw values, naming unknown flags. */
export function parseFlags(argv: readonly string[]): Record<string, unknown> {
  const keys = Object.keys(configSchema.shape)
  const byFlag = new Map(keys.map((k) => [flagName(k), k]))
  const out: Record<string, unknown> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith('--'))
      throw new ConfigError(arg, 'is not a flag; flags look like --http-port 8080')
    const eq = arg.indexOf('=')
    const flag = eq === -1 ? arg : arg.slice(0, eq)
    const key = byFlag.get(flag)
    if (!key)
      throw new ConfigError(flag, `is not a known flag (known: ${[...byFlag.keys()].join(', ')})`)
    if (eq !== -1) out[key] = arg.slice(eq + 1)
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) out[key] = argv[++i]
    else out[key] = 'true'
  }
  return out
}

function readEnv(env: Record<string, string | undefined>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(configSchema.shape) as ConfigKey[]) {
    const alias = ENV_ALIASES[key]
    const value = env[envName(key)] ?? (alias ? env[alias] : undefined)
    if (value !== undefined && value !== '') out[key] = value
  }
  return out
}

function readFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (cause) {
    throw new ConfigError('config', `names a file that cannot be read: ${path}`, { cause })
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (cause) {
    throw new ConfigError('config', `file ${path} is not valid JSON: ${(cause as Error).message}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('config', `file ${path} must hold a JSON object`)
  }
  const known = new Set(Object.keys(configSchema.shape))
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) throw new ConfigError(key, `in ${path} is not a known setting`)
  }
  return parsed as Record<string, unknown>
}

export function loadConfig({
  argv = [],
  env = process.env,
  overrides = {},
}: {
  argv?: readonly string[]
  env?: Record<string, string | undefined>
  overrides?: Record<string, unknown>
} = {}): LoadedConfig {
  const flags = parseFlags(argv)
  const fromEnv = readEnv(env)
  const file = (flags.config ?? fromEnv.config) as string | undefined
  const fromFile = file ? readFile(file) : {}
  const raw = { ...fromFile, ...fromEnv, ...flags, ...overrides }
  const result = configSchema.safeParse(raw)
  if (!result.success) {
    const issue = result.error.issues[0]!
    const key = String(issue.path[0] ?? 'config')
    const given = raw[key]
    const where = `(${flagName(key)}, ${envName(key)})`
    throw new ConfigError(
      key,
      `${issue.message} ${where}${given === undefined ? '' : `; got ${JSON.stringify(given)}`}`
    )
  }
  return { config: result.data, explicit: new Set(Object.keys(raw)) }
}
