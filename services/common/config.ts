import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { filesKeys } from './config-files.ts'
import { gatewayKeys } from './config-gateway.ts'
import { handshakeKeys } from './config-handshake.ts'
import { supervisorKeys } from './config-supervisor.ts'
import { bool, optionalString, port } from './config-values.ts'
import { ConfigError } from './errors.ts'

/**
 * One validated config object. Sources, later wins: defaults < file (`--config`) < env < flags.
 * Keys are flat camelCase; each key `fooBar` is `--foo-bar` on the command line and
 * `UB_FOO_BAR` in the environment. A few keys also read the names the ecosystem uses
 * (`NATS_URL`, `DATABASE_URL`).
 */
export const SERVICE_NAMES = ['store', 'gateway', 'supervisor', 'handshake'] as const
export type ServiceName = (typeof SERVICE_NAMES)[number]

/** 32 bytes in base64 (or base64url), optionally `<key number>:` first for rotation. */
export const SECRET_KEY_PATTERN = /^(\d{1,6}:)?[A-Za-z0-9+/_-]{43}=?$/
const SECRET_KEY_HINT =
  'must be 32 random bytes in base64, optionally after a key number and a colon (2:…); make one with `openssl rand -base64 32`'

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
    .describe(
      'operator token, the same for every process (required on NATS); without NATS made at first start in <dataDir>/admin-token'
    ),
  metricsToken: z
    .string()
    .min(16)
    .optional()
    .describe(
      'a second Bearer token that opens GET /metrics only (for Prometheus), besides the admin token'
    ),
  busPrefix: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, 'must be one NATS token of letters, digits, - or _')
    .default('ub')
    .describe('subject prefix and bucket-name prefix on the bus'),
  busReplicas: z.coerce
    .number()
    .int()
    .min(1)
    .max(5)
    .default(1)
    .describe(
      "copies JetStream keeps of every KV bucket the fabric makes (3 on a three-node NATS cluster, so a node's loss loses nothing); existing buckets are changed to it at start; unused in-process"
    ),
  presenceIntervalMs: z.coerce
    .number()
    .int()
    .min(100)
    .max(60_000)
    .default(2_000)
    .describe(
      'ms between the announcements each service makes for GET /api/v1/cluster; a member unheard for 3× this is gone (the same on every process of a fabric)'
    ),
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
  ...gatewayKeys,
  ...handshakeKeys,
  ...supervisorKeys,
  ...filesKeys,
  busJournalMaxRecordBytes: z.coerce
    .number()
    .int()
    .min(1_048_576)
    .max(2_147_483_647)
    .default(536_870_912)
    .describe(
      'largest in-process bus journal record (one KV entry); a larger write is refused, a larger record read back is damage'
    ),
  secretKey: z
    .string()
    .regex(SECRET_KEY_PATTERN, SECRET_KEY_HINT)
    .optional()
    .describe(
      'key sealing upstream secrets and TLS keys in the database; made in <dataDir>/secret-key when absent'
    ),
  secretKeysRetired: z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(SECRET_KEY_PATTERN, SECRET_KEY_HINT)))
    .default([])
    .describe('earlier secretKeys, comma-separated: read only, values are resealed at start'),
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

/** Every environment variable the config reads: `UB_<KEY>` for each key, and the aliases. */
export const knownEnvNames = (): string[] => [
  ...Object.keys(configSchema.shape).map(envName),
  ...Object.values(ENV_ALIASES),
]

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
