import { configSchema, envName, flagName, loadConfig } from '../common/config.ts'
import { ConfigError } from '../common/errors.ts'
import { createLogger } from '../common/log.ts'
import { installPostgresJsCrashGuard } from './runtime/pg-crash-guard.ts'
import { onShutdownSignal } from './runtime/signals.ts'
import { clusterCommand } from './cluster-command.ts'
import { routeCommand } from './route-command.ts'
import { packageVersion } from '../common/version.ts'

const version = packageVersion()

const HELP = `uns-bridge ${version}: an MQTT bridge fabric for Unified Namespaces

Usage: uns-bridge <command> [flags]      (npm start -- [flags] runs "start")

Commands:
  start     run the services (all four in one process by default)
  migrate   apply database migrations and exit
  cluster   list every member of the fabric (uns-bridge cluster --help)
  route     where one topic goes and comes from, link by link (uns-bridge route --help)
  hash-password
            read a password on stdin, print its hash for the "users" config key
  version   print the version
  help      print this text

Flags (each also UB_<NAME> in the environment; later wins: defaults < --config file < env < flags):
${Object.entries(configSchema.shape)
  .map(
    ([key, schema]) =>
      `  ${flagName(key).padEnd(18)} ${envName(key).padEnd(18)} ${schema.description ?? ''}`
  )
  .join('\n')}
`

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
      return start(rest)
    case 'migrate':
      return migrate(rest)
    case 'hash-password':
      return hashPasswordFromStdin()
    case 'cluster':
      return clusterCommand(rest)
    case 'route':
      return routeCommand(rest)
    default:
      console.error(`unknown command '${command}'\n\n${HELP}`)
      return 2
  }
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
