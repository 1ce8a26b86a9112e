import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError } from '../common/errors.ts'

export interface DataLock {
  release(): void
}

/**
 * One process per data folder while it keeps state there (PGlite, the in-process bus's KV
 * files): two writers would corrupt both. A pid file, taken with O_EXCL; one left by a process
 * that is gone (killed, power cut) is taken over.
 */
export function lockDataDir(dataDir: string): DataLock {
  // The data folder holds the database, the bus journal and the admin token: owner only.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  chmodSync(dataDir, 0o700) // a folder made by hand or by an older version may be 0755
  const file = join(dataDir, 'uns-bridge.pid')
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' })
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err
      const holder = Number(readFileSync(file, 'utf8').trim())
      if (
        Number.isInteger(holder) &&
        holder > 0 &&
        holder !== process.pid &&
        processAlive(holder)
      ) {
        throw new ConfigError(
          'dataDir',
          `'${dataDir}' is in use by process ${holder}; give each instance its own --data-dir`
        )
      }
      rmSync(file, { force: true }) // stale: its process is gone
    }
  }
  return {
    release() {
      try {
        if (readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file)
      } catch {
        // already gone
      }
    },
  }
}

/** Is a process with this pid running (ours or someone else's)? */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
