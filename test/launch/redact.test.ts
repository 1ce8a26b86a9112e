import { describe, expect, it } from 'vitest'
import { redactUrl } from '../../services/launch/reach.ts'

/** What a start-up error line may show of a URL (services/launch/reach.ts). */
describe('redactUrl', () => {
  it.each([
    ['postgres://ub:s3cret@db:5432/ub', {}, 'postgres://ub:***@db:5432/ub'],
    ['postgres://ub:p@ss@db/ub', {}, 'postgres://ub:***@db/ub'], // an unescaped @ in the password
    ['postgres://db/ub?user=ub&password=s3cret', {}, 'postgres://db/ub?user=ub&password=***'],
    ['postgres://ub@db/ub', {}, 'postgres://ub@db/ub'], // a bare user name is not a secret
    ['nats://tok3n@n1:4222', { bareUserIsSecret: true }, 'nats://***@n1:4222'], // a NATS token is
    [
      'nats://a:s3cret@n1:4222, nats://n2:4222',
      { bareUserIsSecret: true },
      'nats://a:***@n1:4222,nats://n2:4222',
    ],
    ['127.0.0.1:4222', { bareUserIsSecret: true }, '127.0.0.1:4222'],
  ])('%s', (raw, options, shown) => {
    expect(redactUrl(raw, options)).toBe(shown)
    expect(redactUrl(raw, options)).not.toMatch(/s3cret|tok3n|p@ss/)
  })
})
