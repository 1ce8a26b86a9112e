import { generateKeyPairSync, sign } from 'node:crypto'
import { advertPayload, type Advert } from '../../services/common/topology.ts'

/** An Ed25519 key as an instance has one, to sign adverts in tests (forged ones included). */
export interface TestKey {
  publicKey: string
  /** The advert with its signature under this key. */
  sign<T extends Advert>(ad: T): T
}

export function testKey(): TestKey {
  const { privateKey } = generateKeyPairSync('ed25519')
  const publicKey = privateKey.export({ format: 'jwk' }).x!
  return {
    publicKey,
    sign: (ad) => ({
      ...ad,
      signature: sign(null, advertPayload(ad), privateKey).toString('base64url'),
    }),
  }
}
