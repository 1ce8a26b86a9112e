import { describe, expect, it } from 'vitest'
import {
  bindingProblem,
  bindingsProblem,
  bindingWithinGrants,
  compileBinding,
  normalBinding,
  type Binding,
} from '../../machines/index.ts'

describe('a binding with captures', () => {
  const b: Binding = { source: 'site/+/line/+/#', target: 'acme/{1}/{2}/#', direction: 'both' }

  it('mirrors out with captures reordered, and back in through the inverse', () => {
    expect(bindingProblem(b)).toBeNull()
    const c = compileBinding(b)
    expect(c.localFilter).toBe('site/+/line/+/#')
    expect(c.upstreamFilter).toBe('acme/+/+/#')
    expect(c.toUpstream('site/s1/line/l2/temp')).toBe('acme/s1/l2/temp')
    expect(c.toUpstream('site/s1/line/l2')).toBe('acme/s1/l2')
    expect(c.toUpstream('site/s1/cell/l2/temp')).toBeNull()
    expect(c.toUpstream('site/s1/line')).toBeNull()
    expect(c.toLocal('acme/s1/l2/cmd/stop')).toBe('site/s1/line/l2/cmd/stop')
    expect(c.toLocal('other/s1/l2')).toBeNull()
  })

  it('reorders captures', () => {
    const c = compileBinding({ source: 'a/+/b/+', target: 'x/{2}/{1}', direction: 'in' })
    expect(c.toUpstream('a/1/b/2/t')).toBe('x/2/1/t')
    expect(c.toLocal('x/2/1/t')).toBe('a/1/b/2/t')
  })

  it('is the prefix swap it always was without captures', () => {
    const c = compileBinding({ source: 'plant1', target: 'acme/plant1' })
    expect(c.direction).toBe('out')
    expect(c.toUpstream('plant1')).toBe('acme/plant1')
    expect(c.toUpstream('plant1/l/t')).toBe('acme/plant1/l/t')
    expect(c.toUpstream('plant10/l')).toBeNull()
  })

  it('refuses what cannot route, naming the problem', () => {
    const problem = (x: Binding) => bindingProblem(x)
    expect(problem({ source: 'a/+', target: 'x/{2}' })).toMatch(/names a '\+' the source/)
    expect(problem({ source: 'a/#/b', target: 'x' })).toMatch(/source/)
    expect(problem({ source: 'a/b+', target: 'x' })).toMatch(/source/)
    expect(problem({ source: 'a', target: 'x/{1' })).toMatch(/target/)
    expect(problem({ source: 'a', target: 'x/+' })).toMatch(/target/)
    expect(problem({ source: '$SYS/+', target: 'x/{1}' })).toMatch(/source/)
    // Coming down, a dropped or doubled capture cannot be put back.
    expect(problem({ source: 'a/+/+', target: 'x/{1}', direction: 'in' })).toMatch(
      /\{2\} exactly once/
    )
    expect(problem({ source: 'a/+', target: 'x/{1}/{1}', direction: 'both' })).toMatch(
      /\{1\} exactly once/
    )
    expect(problem({ source: 'a/+/+', target: 'x/{1}' })).toBeNull() // out may merge
    expect(problem({ source: 'a', target: 'x', direction: 'sideways' as never })).toMatch(
      /direction/
    )
  })

  it('keeps bindings coming in from sharing local or upstream topics', () => {
    expect(
      bindingsProblem([
        { source: 'a/+', target: 'x/{1}', direction: 'in' },
        { source: 'a/b', target: 'y' },
      ])?.problem
    ).toMatch(/shares local topics with 'a\/b'/)
    expect(
      bindingsProblem([
        { source: 'a', target: 'x/k/y', direction: 'in' },
        { source: 'b', target: 'x', direction: 'both' },
      ])?.problem
    ).toMatch(/shares upstream topics/)
    expect(
      bindingsProblem([
        { source: 'a', target: 'x' },
        { source: 'a/#', target: 'y' },
      ])
    ).toEqual({
      index: 1,
      problem: "source 'a/#' is bound twice",
    })
    // Going out, overlap is allowed: a topic under two sources goes to both targets.
    expect(
      bindingsProblem([
        { source: 'a', target: 'x' },
        { source: 'a/b', target: 'y' },
        { source: 'c', target: 'z', direction: 'in' },
      ])
    ).toBeNull()
  })

  it('lies inside the grants only when its fixed target prefix does', () => {
    expect(bindingWithinGrants({ source: 'a/+', target: 'acme/{1}' }, ['acme'])).toBe(true)
    expect(bindingWithinGrants({ source: 'a/+', target: 'acme/{1}' }, ['acme/s1'])).toBe(false)
    expect(bindingWithinGrants({ source: 'a/+', target: '{1}/x' }, ['acme'])).toBe(false)
    expect(bindingWithinGrants({ source: 'a/+', target: '{1}/x' }, ['#'])).toBe(true)
    expect(bindingWithinGrants({ source: 'a', target: 'acme/a' }, ['acme/a'])).toBe(true)
  })

  it('is stored without its trailing /#', () => {
    expect(normalBinding(b)).toEqual({
      source: 'site/+/line/+',
      target: 'acme/{1}/{2}',
      direction: 'both',
    })
    expect(normalBinding({ source: 'a', target: 'b' })).toEqual({ source: 'a', target: 'b' })
  })
})
