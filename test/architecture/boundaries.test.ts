import { describe, expect, it } from 'vitest'
import { findViolations, relativeImports, ruleBroken } from './boundaries.ts'

const root = new URL('../..', import.meta.url).pathname

describe('service boundaries', () => {
  it('no file reaches into another service or breaks a room rule', () => {
    expect(findViolations(root)).toEqual([])
  })

  it('flags an import of another service internals, and allows its index.ts', () => {
    expect(ruleBroken('services/gateway/gateway.ts', 'services/supervisor/peer.ts')).toMatch(
      /index\.ts only/
    )
    expect(ruleBroken('services/gateway/gateway.ts', 'services/supervisor/index.ts')).toBeNull()
    expect(ruleBroken('services/gateway/a.ts', 'services/gateway/sub/b.ts')).toBeNull()
  })

  it('flags common/, contracts/ and db/ importing a service, and common/ importing contracts/', () => {
    expect(ruleBroken('services/common/context.ts', 'services/store/index.ts')).toMatch(/never/)
    expect(ruleBroken('services/contracts/x.ts', 'services/store/api.ts')).toMatch(/never/)
    expect(ruleBroken('db/schema.ts', 'services/store/api.ts')).toMatch(/never/)
    expect(ruleBroken('services/common/x.ts', 'services/contracts/store.ts')).toMatch(/common/)
    expect(ruleBroken('services/contracts/x.ts', 'services/common/errors.ts')).toBeNull()
  })

  it('flags the database outside the store and the launcher, and files at services/ root', () => {
    expect(ruleBroken('services/gateway/x.ts', 'db/client.ts')).toMatch(/database/)
    expect(ruleBroken('services/store/x.ts', 'db/client.ts')).toBeNull()
    expect(ruleBroken('services/main.ts', 'services/common/log.ts')).toMatch(/room/)
    expect(ruleBroken('machines/x.ts', 'services/common/log.ts')).toMatch(/pure/)
  })

  it('reads static, re-export, type-only and dynamic imports', () => {
    const src = [
      "import a from './a.ts'",
      "import type { B } from '../b.ts'",
      "export { c } from './c.ts'",
      "const d = await import('./d.ts')",
      "import 'node:fs'",
      "import './side-effect.ts'",
    ].join('\n')
    expect(relativeImports(src)).toEqual([
      './a.ts',
      '../b.ts',
      './c.ts',
      './d.ts',
      './side-effect.ts',
    ])
  })
})
