import { configSchema, envName, flagName, loadConfig } from '../common/config.ts'
import { ConfigError } from '../common/errors.ts'
import { createLogger } from '../common/log.ts'
import { installPostgresJsCrashGuard } from './runtime/pg-crash-guard.ts'
import { onShutdownSignal } from './runtime/signals.ts'
import { OPERATOR_COMMANDS, operatorCommand } from './commands/index.ts'
import { processIo } from './commands/io.ts'
import { packageVersion } from '../common/version.ts'

const version = packageVersion()

const FLAGS = `Flags (each also UB_<NAME> in the environment; later wins: defaults < --config file < env < flags):
${Object.entries(configSchema.shape)
  .map(
    ([key, schema]) =>
      `  ${flagName(key).padEnd(18)} ${envName(key).padEnd(18)} ${schema.description ?? ''}`
  )
  .join('\n')}
`

const HELP = `uns-bridge ${version}: an MQTT bridge fabric for Unified Namespaces

Usage: uns-bridge <command> [flags]      (npm start -- [flags] runs "start")

Commands:
  start     run the services (all four in one process by default)
  migrate   apply database migrations and exit
  hash-password
            read a password on stdin, print its hash for the "users" config key
  prepare   make what speeds up a start (npm install runs it): a PGlite database to copy from
  version   print the version
  help      print this text

Operator commands, over the HTTP API (each has --help; --url, --token, --data-dir, --json):
  status    this instance and its links: each upstream's state and link health
  upstreams list | create | show | bind | activate | deactivate | refresh | request | delete
  requests  list | show | accept [--grant NS]… | decline | revoke
  log       upstream|request <id> [--follow]: a machine's transition log
  replay    upstream|request <id> [--to SEQ]: its state rebuilt from the log, chain verified
  route     where one topic goes and comes from, link by link
  cluster   list every member of the fabric

${FLAGS}`

const START_HELP = `Usage: uns-bridge start [flags]      (npm start -- [flags])

Runs the services (all four in one process by default: store, gateway, supervisor, handshake),
prints where to connect, and stops cleanly on SIGTERM or SIGINT.

${FLAGS}`

const MIGRATE_HELP = `Usage: uns-bridge migrate [flags]

Applies the database migrations (on Postgres, creates the database first when it is missing)
and exits. The flags that matter: --database-url (else PGlite in --data-dir).

${FLAGS}`

const wantsHelp = (argv: readonly string[]) => argv.includes('--help') || argv.includes('-h')

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv
  switch (command) {
    case 'version':
    case '--version':
      console.log(version)
      return 0
    case 'help':
    case '--help':
    case '-h':
      console.log(HELP)
      return 0
    case 'start':
      if (wantsHelp(rest)) return printHelp(START_HELP)
      return start(rest)
    case 'migrate':
      if (wantsHelp(rest)) return printHelp(MIGRATE_HELP)
      return migrate(rest)
    case 'hash-password':
      return hashPasswordFromStdin()
    case 'prepare':
      return prepare()
    default:
      if ((OPERATOR_COMMANDS as readonly string[]).includes(command)) return operator(argv)
      console.error(`unknown command '${command}'\n\n${HELP}`)
      return 2
  }
}

function printHelp(text: string): number {
  console.log(text)
  return 0
}

/** An operator command; a `--follow` ends with exit 0 on Ctrl-C (SIGINT) or SIGTERM. */
function operator(argv: string[]): Promise<number> {
  if (!argv.includes('--follow')) return operatorCommand(argv)
  const stop = new AbortController()
  process.once('SIGINT', () => stop.abort())
  process.once('SIGTERM', () => stop.abort())
  return operatorCommand(argv, processIo(stop.signal))
}

async function start(argv: string[]): Promise<number> {
  const { config, explicit } = loadConfig({ argv })
  const log = createLogger({ level: config.logLevel })
  const { startFabric } = await import('./main.ts')
  // Listen before anything is printed: pino writes asynchronously, so a launcher can read the
  // ready line and signal before the next statement runs on a loaded machine (seen in CI).
  const shutdown = onShutdownSignal()
  if (config.databaseUrl) installPostgresJsCrashGuard(log)
  const fabric = await startFabric({ config, explicit, log })
  // Every process checks the operator token, and accepts only the one named here.
  const token = fabric.adminTokenCreated
    ? `${fabric.adminToken}   (made now and kept in ${fabric.adminTokenFile}; shown only this once)`
    : fabric.adminTokenFile
      ? `(kept in ${fabric.adminTokenFile})`
      : '(the adminToken you set, e.g. UB_ADMIN_TOKEN; no other is accepted)'
  process.stdout.write(
    [
      '',
      `uns-bridge ${version} is running as instance ${fabric.instanceId}`,
      ...fabric.endpoints.map((e) => `  ${e}`),
      ...(config.services.includes('handshake') ? [`  console  ${fabric.httpUrl}/console/`] : []),
      `  admin token: ${token}`,
      `  try: curl -H "Authorization: Bearer <token>" ${fabric.httpUrl}/api/v1/instance`,
      '',
    ].join('\n') + '\n'
  )
  // The ready line comes last: launchers wait for it, and by then the banner is out too.
  log.info(
    {
      instanceId: fabric.instanceId,
      http: fabric.httpUrl,
      mqtt: fabric.mqttUrl,
      services: config.services,
      endpoints: fabric.endpoints,
    },
    'ready'
  )
  await shutdown
  log.info('stopping')
  await fabric.close()
  log.info('stopped')
  return 0
}

/** The password comes on stdin, not as an argument, so it stays out of shell history and `ps`. */
async function hashPasswordFromStdin(): Promise<number> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const password = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
  if (!password) {
    console.error(
      'hash-password: give the password on stdin, e.g. `read -s P; echo "$P" | uns-bridge hash-password`'
    )
    return 2
  }
  const { hashPassword } = await import('../gateway/index.ts')
  console.log(await hashPassword(password))
  return 0
}

/**
 * The migrated PGlite database a first start copies (db/pglite-template.ts); bin.mjs has made the
 * CLI's bundle before this runs. Never fails an install: a start makes what is missing.
 */
async function prepare(): Promise<number> {
  const { ensurePgliteTemplate, pgliteTemplateDir } = await import('../../db/pglite-template.ts')
  const made = await ensurePgliteTemplate()
  console.log(made ? `PGlite template: ${pgliteTemplateDir()}` : 'PGlite template: not made')
  return 0
}

/** Bring the schema up to date; on Postgres, create the database first when it is missing. */
async function migrate(argv: string[]): Promise<number> {
  const { config } = loadConfig({ argv })
  const log = createLogger({ level: config.logLevel })
  const { createDb } = await import('../../db/client.ts')
  const { migrateDb } = await import('../../db/migrate.ts')
  const { postgresFailure } = await import('./reach.ts')
  const url = config.databaseUrl
  if (url) {
    const { ensureDatabase } = await import('../../db/ensure-database.ts')
    const { database, created } = await ensureDatabase(url).catch((err: unknown) => {
      throw postgresFailure(err, url, 'create the database on')
    })
    if (created) log.info({ database }, 'created the database')
  }
  if (!url) {
    const { seedPgliteDir } = await import('../../db/pglite-template.ts')
    await seedPgliteDir(config.dataDir) // a new folder starts as a copy of a migrated template
  }
  const db = await createDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir })
  try {
    await migrateDb(db).catch((err: unknown) => {
      throw url ? postgresFailure(err, url, 'migrate') : err
    })
    log.info({ database: config.databaseUrl ? 'postgres' : 'pglite' }, 'migrations applied')
  } finally {
    await db.close()
  }
  return 0
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A setting to fix is one line naming it; anything else keeps its stack for a bug report.
    if (err instanceof ConfigError) {
      console.error(`uns-bridge: config error: ${err.message}`)
      process.exit(2)
    }
    console.error(err)
    process.exit(1)
  }
)
