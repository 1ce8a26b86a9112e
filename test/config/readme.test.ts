import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { configSchema } from '../../services/common/config.ts'

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

describe('README', () => {
  it('documents every config key in its configuration table', () => {
    // Prettier pads table cells, so compare the first cell of each row, trimmed.
    const documented = new Set(
      README.split('\n')
        .filter((line) => line.startsWith('|'))
        .map((line) => line.split('|')[1]!.trim())
    )
    const missing = Object.keys(configSchema.shape).filter((key) => !documented.has(`\`${key}\``))
    expect(missing).toEqual([])
  })

  it('states the two commands that CI runs', () => {
    expect(README).toContain('npm install && npm start')
    expect(README).toContain('npm test')
    const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8')
    expect(ci.trim().split('\n').at(-1)).toBe('npm test')
  })
})
