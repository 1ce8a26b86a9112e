import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig } from '../../services/common/config.ts'
import { silentLogger } from '../../services/common/log.ts'
import { resolveSecretKeys } from '../../services/launch/secret-key.ts'

/** Where the store's sealing key comes from (services/launch/secret-key.ts). */
describe('secret key for sealing at rest', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })
  const dataDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'ub-sk-'))
    dirs.push(d)
    return join(d, 'data')
  }
  const resolve = (env: Record<string, string>) =>
    resolveSecretKeys(loadConfig({ env }).config, silentLogger())

  it('is made once in the data folder, owner-only, and read back', () => {
    const dir = dataDir()
    const made = resolve({ UB_DATA_DIR: dir })!
    expect(made.file).toBe(join(dir, 'secret-key'))
    expect(Buffer.from(made.current, 'base64')).toHaveLength(32)
    expect(statSync(made.file!).mode & 0o777).toBe(0o600)
    expect(resolve({ UB_DATA_DIR: dir })!.current).toBe(made.current)
    // A copy made readable by others is made private again.
    chmodSync(made.file!, 0o644)
    resolve({ UB_DATA_DIR: dir })
    expect(statSync(made.file!).mode & 0o777).toBe(0o600)
  })

  it('comes from config when given, with retired keys; Postgres without one is refused', () => {
    const dir = dataDir()
    const current = Buffer.alloc(32, 1).toString('base64')
    const old = `1:${Buffer.alloc(32, 2).toString('base64')}`
    expect(
      resolve({ UB_DATA_DIR: dir, UB_SECRET_KEY: `2:${current}`, UB_SECRET_KEYS_RETIRED: old })
    ).toEqual({ current: `2:${current}`, retired: [old], file: null })
    expect(() => resolve({ UB_DATA_DIR: dir, DATABASE_URL: 'postgres://x/y' })).toThrow(
      /'secretKey'.*Postgres/
    )
  })

  it('a malformed key is a config error naming the key', () => {
    expect(() => resolve({ UB_SECRET_KEY: 'too-short' })).toThrow(/'secretKey'.*UB_SECRET_KEY/)
    expect(() => resolve({ UB_SECRET_KEYS_RETIRED: 'nope' })).toThrow(/'secretKeysRetired'/)
  })

  it('an unreadable key file is a config error naming the key', () => {
    const dir = dataDir()
    mkdirSync(join(dir, 'secret-key'), { recursive: true }) // a folder cannot be read as a key
    expect(() => resolve({ UB_DATA_DIR: dir })).toThrow(/'secretKey' key file .* cannot be read/)
  })
})
