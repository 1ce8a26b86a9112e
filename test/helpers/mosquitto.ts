import { freePort, spawnServer } from './server-process.ts'
export { freePort }
import { spawn } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const MOSQUITTO_BIN = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto'

export interface Mosquitto {
  port: number
  pid: number
  /** `mqtt://127.0.0.1:<port>` */
  url: string
  /** The config file it runs with, and its folder (for password files and the like). */
  configPath: string
  dir: string
  /** SIGTERM by default; SIGKILL models a crash. Resolves once it exited and its folder is gone. */
  stop(signal?: NodeJS.Signals): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface MosquittoOptions {
  /** Extra config lines, appended after the listener (`connection …` blocks for a bridge). */
  config?: string
  /** Username/password pairs; when given, anonymous clients are refused. */
  users?: Record<string, string>
  /** A fixed port (a restart on the same port); a free one when absent. */
  port?: number
  /**
   * A folder of the caller's that keeps `mosquitto.db` (written at a clean stop, SIGTERM), so a
   * broker started again with the same folder resumes its persistent sessions and their queues;
   * `stop()` leaves it. Persistence is off when absent.
   */
  persistDir?: string
}

/**
 * A private Mosquitto on 127.0.0.1 and a free port, with its own config in a temp folder (the
 * system one holds 1883). With `users`, a password file is made with `mosquitto_passwd -b`.
 */
export async function startMosquitto({
  config = '',
  users,
  port,
  persistDir,
}: MosquittoOptions = {}): Promise<Mosquitto> {
  const p = port ?? (await freePort())
  const dir = await mkdtemp(join(tmpdir(), 'ub-mosq-'))
  const lines = [
    `listener ${p} 127.0.0.1`,
    ...(persistDir
      ? ['persistence true', `persistence_location ${persistDir}/`]
      : ['persistence false']),
    'log_dest stderr',
    'log_type error',
    'log_type warning',
  ]
  // Run as root, mosquitto drops to user `mosquitto`, who cannot read our 0700 temp folder.
  if (process.getuid?.() === 0) lines.push('user root')
  if (users) {
    const file = join(dir, 'passwd')
    await writeFile(file, '')
    for (const [u, pw] of Object.entries(users)) {
      await new Promise<void>((res, rej) => {
        const c = spawn('mosquitto_passwd', ['-b', file, u, pw], { stdio: 'ignore' })
        c.once('error', rej)
        c.once('exit', (code) =>
          code === 0 ? res() : rej(new Error(`mosquitto_passwd exited ${code}`))
        )
      })
    }
    lines.push('allow_anonymous false', `password_file ${file}`)
  } else {
    lines.push('allow_anonymous true')
  }
  const configPath = join(dir, 'mosquitto.conf')
  await writeFile(configPath, [...lines, config].join('\n') + '\n')
  const server = await spawnServer({ bin: MOSQUITTO_BIN, args: ['-c', configPath], port: p, dir })
  const stop = server.stop
  return {
    port: p,
    pid: server.pid,
    url: `mqtt://127.0.0.1:${p}`,
    configPath,
    dir,
    stop,
    [Symbol.asyncDispose]: () => stop(),
  }
}
