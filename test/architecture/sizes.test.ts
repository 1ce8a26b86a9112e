import { describe, expect, it } from 'vitest'
import { functionSizes, MAX_FUNCTION_LINES, MAX_MODULE_LINES, oversized } from './sizes.ts'

const root = new URL('../..', import.meta.url).pathname

describe('module and function sizes', () => {
  it(`keeps modules under ${MAX_MODULE_LINES} lines and functions under ${MAX_FUNCTION_LINES}`, () => {
    expect(oversized(root)).toEqual({ modules: [], functions: [] })
  })

  it('measures a factory closure as one function, its inner functions apart', () => {
    const inner = Array.from({ length: 5 }, (_, i) => `    const x${i} = ${i}`).join('\n')
    const source = `export function createX() {\n  function step() {\n${inner}\n  }\n  return step\n}\n`
    expect(functionSizes('x.ts', source)).toEqual([
      { file: 'x.ts', name: 'createX', lines: 10 },
      { file: 'x.ts', name: 'step', lines: 7 },
    ])
  })
})
