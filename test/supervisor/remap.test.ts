import { describe, expect, it } from 'vitest'
import { createRemapper } from '../../services/supervisor/remap.ts'

describe('remap', () => {
  it('maps the source itself and everything under it, and nothing beside it', () => {
    const r = createRemapper([{ source: 'plant1/line3', target: 'acme/plant1/line3' }])
    expect(r.filters).toEqual(['plant1/line3/#'])
    expect(r.map('plant1/line3')).toEqual(['acme/plant1/line3'])
    expect(r.map('plant1/line3/press/temp')).toEqual(['acme/plant1/line3/press/temp'])
    expect(r.map('plant1/line30/x')).toEqual([])
    expect(r.map('plant1')).toEqual([])
  })

  it('subscribes once for nested sources and mirrors a message to every covering binding', () => {
    const r = createRemapper([
      { source: 'a', target: 'x' },
      { source: 'a/b', target: 'y' },
    ])
    expect(r.filters).toEqual(['a/#'])
    expect(r.map('a/b/c')).toEqual(['y/c', 'x/b/c'])
    expect(r.map('a/c')).toEqual(['x/c'])
  })
})
