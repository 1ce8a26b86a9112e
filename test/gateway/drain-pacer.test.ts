import { describe, expect, it } from 'vitest'
import { createDrainPacer } from '../../services/gateway/persistence/drain-pacer.ts'

const microtasks = () => new Promise<void>((r) => queueMicrotask(r))
const nextTurn = () => new Promise<void>((r) => setImmediate(r))

describe('the drain pacer', () => {
  it('hands out at most its permits per turn of the event loop, in the order they were asked', async () => {
    const pacer = createDrainPacer({ perTurn: 4 })
    const granted: number[] = []
    for (let i = 0; i < 10; i++) void pacer.permit().then(() => granted.push(i))
    await microtasks()
    expect(granted).toHaveLength(4)
    await nextTurn()
    expect(granted).toHaveLength(8)
    await nextTurn()
    expect(granted).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  })

  it('makes the next permit wait for the next turn once the budget is spent', async () => {
    const pacer = createDrainPacer({ perTurn: 2 })
    await pacer.permit()
    await pacer.permit()
    let third = false
    void pacer.permit().then(() => (third = true))
    await microtasks()
    expect(third).toBe(false)
    await nextTurn()
    expect(third).toBe(true)
  })
})
