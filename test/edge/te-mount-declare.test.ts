import { describe, expect, it } from 'vitest'
import { TE_MAX_MOUNTS } from '../../services/contracts/te-entities.ts'
import { teMountsOf } from '../../services/supervisor/te-mounts.ts'

/** What a downstream declares as its thin-edge.io mounts, from its bindings and its teRoot. */
describe('teMountsOf', () => {
  it('mounts a binding of the root, of a subtree of it, or of a namespace above it', () => {
    expect(
      teMountsOf(
        [
          { source: 'te', target: 'acme/site1/te', direction: 'both' },
          { source: 'te/device', target: 'acme/site1/devices' },
          { source: 'site', target: 'acme/site9' },
          { source: 'plant1/line3', target: 'acme/plant1/line3' },
        ],
        'te'
      )
    ).toEqual([
      { target: 'acme/site1/te', path: '' },
      { target: 'acme/site1/devices', path: 'device' },
    ])
    expect(teMountsOf([{ source: 'site', target: 'acme/site9' }], 'site/te')).toEqual([
      { target: 'acme/site9/te', path: '' },
    ])
  })

  it('mounts nothing coming in only, remapped, deeper than an entity, or with teRoot off', () => {
    expect(
      teMountsOf(
        [
          { source: 'te', target: 'acme/in', direction: 'in' },
          { source: 'te/+', target: 'acme/{1}' },
          { source: 'te/device/c1//x', target: 'acme/deep' },
        ],
        'te'
      )
    ).toEqual([])
    expect(teMountsOf([{ source: 'te', target: 'acme/te' }], '')).toEqual([])
  })

  it(`declares at most ${TE_MAX_MOUNTS}`, () => {
    const many = Array.from({ length: 40 }, (_, i) => ({ source: `te/d${i}`, target: `a/t${i}` }))
    expect(teMountsOf(many, 'te')).toHaveLength(TE_MAX_MOUNTS)
  })
})
