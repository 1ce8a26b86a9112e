import { readFileSync } from 'node:fs'
import type { Config } from './config.ts'
import { ConfigError } from './errors.ts'

export interface PemMaterial {
  cert: string
  key: string
  ca?: string
}

function readPem(key: 'tlsCert' | 'tlsKey' | 'tlsCa', path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (cause) {
    throw new ConfigError(key, `names a file that cannot be read: ${path}`, { cause })
  }
}

/** The PEM files named by tlsCert, tlsKey (and tlsCa), for the listeners in `neededBy`. */
export function readTlsMaterial(config: Config, neededBy: string): PemMaterial {
  if (!config.tlsCert) throw new ConfigError('tlsCert', `is required by ${neededBy}`)
  if (!config.tlsKey) throw new ConfigError('tlsKey', `is required by ${neededBy}`)
  return {
    cert: readPem('tlsCert', config.tlsCert),
    key: readPem('tlsKey', config.tlsKey),
    ...(config.tlsCa ? { ca: readPem('tlsCa', config.tlsCa) } : {}),
  }
}
