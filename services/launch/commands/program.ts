import { Command, CommanderError, InvalidArgumentError } from 'commander'
import { apiClient, type ApiClient, type ApiOptions } from './client.ts'
import {
  ApiFailure,
  CommandFailed,
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  UsageError,
  type Io,
} from './io.ts'

/** The operator commands cli.ts hands to commander; start, migrate and the rest stay in cli.ts. */
export const OPERATOR_COMMANDS = [
  'upstreams',
  'requests',
  'log',
  'replay',
  'status',
  'route',
  'cluster',
] as const

/** What a command's action gets: its output, the API client (made on first use) and --json. */
export interface Ctx {
  io: Io
  json: boolean
  api(): ApiClient
}

/** Registers one group of commands on the root program. */
export type Register = (root: Command, run: Runner) => void

/** Wraps a command's action: parses the shared flags, gives it a Ctx. */
export type Runner = (
  action: (ctx: Ctx, args: unknown[], opts: Record<string, unknown>) => Promise<void>
) => (...args: unknown[]) => Promise<void>

/** The flags every API command takes, added to each leaf so they go anywhere after its name. */
export function apiFlags(cmd: Command): Command {
  return cmd
    .option(
      '--url <url>',
      'the handshake API (default UB_URL, else http://127.0.0.1:<UB_HTTP_PORT or 8080>)'
    )
    .option(
      '--token <token>',
      'admin token (default UB_ADMIN_TOKEN, else <data-dir>/admin-token; a flag shows in ps)'
    )
    .option('--data-dir <dir>', 'where admin-token is read (default UB_DATA_DIR or .data)')
    .option('--json', 'print the result as one JSON document')
}

/** A whole-number option value in [min, max], or a usage error naming the flag. */
export function integer(min: number, max: number) {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max)
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`)
    return Number(value)
  }
}

/**
 * Run `uns-bridge <operator command> …` (argv from the command name on) and return the exit
 * code: 0 done (and for --help), 1 the API refused or could not be reached, 2 a usage error.
 */
export async function runOperator(
  argv: readonly string[],
  io: Io,
  groups: readonly Register[]
): Promise<number> {
  let exitCode = EXIT_OK
  const root = new Command('uns-bridge')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError('(add --help for usage)')
    .helpCommand(false)
  const run: Runner =
    (action) =>
    async (...all) => {
      const cmd = all[all.length - 1] as Command
      const opts = cmd.opts() as ApiOptions & Record<string, unknown>
      const args = all.slice(0, -2)
      let client: ApiClient | undefined
      const ctx: Ctx = {
        io,
        json: opts.json === true,
        api: () => (client ??= apiClient(opts, io.env)),
      }
      exitCode = await settle(cmd, () => action(ctx, args, opts), io)
    }
  for (const register of groups) register(root, run)
  try {
    await root.parseAsync([...argv], { from: 'user' })
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err
    return err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
      ? EXIT_OK
      : EXIT_USAGE
  }
  return exitCode
}

/** The action's exit code; every failure it meets becomes one line on stderr, never a stack. */
async function settle(cmd: Command, action: () => Promise<void>, io: Io): Promise<number> {
  const name = commandPath(cmd)
  try {
    await action()
    return EXIT_OK
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${name}: ${err.message}\n(add --help for usage)\n`)
      return EXIT_USAGE
    }
    if (err instanceof ApiFailure || err instanceof CommandFailed) {
      io.err(`${name}: ${err.message}\n`)
      return EXIT_FAILURE
    }
    io.err(`${name}: ${(err as Error)?.message ?? String(err)}\n`)
    return EXIT_FAILURE
  }
}

function commandPath(cmd: Command): string {
  const names: string[] = []
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name())
  return names.join(' ')
}
