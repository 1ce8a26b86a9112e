import { afterEach, expect } from 'vitest'

// A test fails if anything rejected or threw outside its awaited path (h3 `_setup.ts`).
const unhandled: unknown[] = []
process.on('unhandledRejection', (reason) => unhandled.push(reason))
process.on('uncaughtException', (err) => unhandled.push(err))

afterEach(() => {
  const captured = unhandled.splice(0)
  expect(captured, 'unhandled errors during the test').toEqual([])
})
