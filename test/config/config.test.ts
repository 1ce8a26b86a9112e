import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../../services/common/config.ts'
import { ConfigError } from '../../services/common/errors.ts'

const made: string[] = []
afterAll(() => {
  for (const file of made) rmSync(dirname(file), { recursive: true, force: true })
})

function configFile(content: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'ub-cfg-')), 'config.json')
  writeFileSync(file, content)
  made.push(file)
  return file
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('expected a ConfigError')
}

describe('config', () => {
  it('layers defaults < file < env < flags', () => {
    const file = configFile(
      JSON.stringify({ httpPort: 1000, mqttPort: 1001, busPrefix: 'fromfile' })
    )
    const { config, explicit } = loadConfig({
      argv: ['--config', file, '--mqtt-port', '3001'],
      env: { UB_HTTP_PORT: '2000', UB_MQTT_PORT: '2001' },
    })
    expect({
      http: config.httpPort,
      mqtt: config.mqttPort,
      prefix: config.busPrefix,
      dir: config.dataDir,
    }).toEqual({
      http: 2000,
      mqtt: 3001,
      prefix: 'fromfile',
      dir: '.data',
    })
    expect([...explicit].sort()).toEqual(['busPrefix', 'config', 'httpPort', 'mqttPort'])
  })

  it('reads NATS_URL and DATABASE_URL, and UB_ names win over them', () => {
    const { config } = loadConfig({
      env: {
        NATS_URL: 'nats://a:4222',
        DATABASE_URL: 'postgres://x/y',
        UB_NATS_URL: 'nats://b:4222',
      },
    })
    expect({ nats: config.natsUrl, db: config.databaseUrl }).toEqual({
      nats: 'nats://b:4222',
      db: 'postgres://x/y',
    })
  })

  it('accepts --key=value and a comma list of services', () => {
    const { config } = loadConfig({ argv: ['--services=store,gateway', '--trust-proxy'], env: {} })
    expect({ services: config.services, trustProxy: config.trustProxy }).toEqual({
      services: ['store', 'gateway'],
      trustProxy: true,
    })
  })

  it.each([
    [['--mqtt-port', 'abc'], 'mqttPort', /--mqtt-port, UB_MQTT_PORT.*"abc"/],
    [['--http-port', '70000'], 'httpPort', /<=65535/],
    [['--services', 'store,teleport'], 'services', /expected one of/],
    [['--bus-prefix', 'a.b'], 'busPrefix', /one NATS token/],
    [['--admin-token', 'short'], 'adminToken', /16/],
    [['--frobnicate', '1'], '--frobnicate', /not a known flag/],
    [['stray'], 'stray', /is not a flag/],
  ])('names the key for %j', (argv, key, pattern) => {
    const err = errorOf(() => loadConfig({ argv, env: {} }))
    expect(err.key).toBe(key)
    expect(err.code).toBe('invalid_config')
    expect(err.message).toMatch(pattern)
  })

  it('names the key of a bad environment variable', () => {
    const err = errorOf(() => loadConfig({ env: { UB_LOG_LEVEL: 'loud' } }))
    expect(err.key).toBe('logLevel')
    expect(err.message).toMatch(/UB_LOG_LEVEL/)
  })

  it('refuses unknown keys and broken JSON in the file', () => {
    expect(
      errorOf(() => loadConfig({ argv: ['--config', configFile('{"htpPort": 1}')], env: {} })).key
    ).toBe('htpPort')
    expect(
      errorOf(() => loadConfig({ argv: ['--config', configFile('{nope')], env: {} })).message
    ).toMatch(/not valid JSON/)
    expect(
      errorOf(() => loadConfig({ argv: ['--config', '/nonexistent/x.json'], env: {} })).key
    ).toBe('config')
  })
})
