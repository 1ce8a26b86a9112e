/**
 * Shares each turn of the event loop among the queues being drained (sessions catching up).
 *
 * aedes writes a resumed session's queue as fast as the session takes it, so a few sessions
 * catching up on large backlogs could fill every turn of the loop, and a healthy subscriber's
 * live messages waited behind them (npm run bench -- isolation). Here every queued message handed
 * out takes a permit, and at most `perTurn` permits go out per turn of the loop, to whichever
 * drains asked first. A drain so runs at full speed on an idle gateway and gets a smaller share
 * of a busy one: the work it adds to a turn is bounded, whatever the number of drains.
 */
export interface DrainPacer {
  /** Resolves when the caller may hand out one more queued message. */
  permit(): Promise<void>
}

export const DRAIN_PERMITS_PER_TURN = 16

export function createDrainPacer({
  perTurn = DRAIN_PERMITS_PER_TURN,
}: { perTurn?: number } = {}): DrainPacer {
  // Each drain waits for one permit at a time, so this holds at most one entry per drain.
  const waiting: Array<() => void> = []
  let left = perTurn
  let scheduled = false

  function nextTurn(): void {
    scheduled = false
    left = perTurn
    while (left > 0 && waiting.length > 0) {
      left--
      waiting.shift()!()
    }
    if (waiting.length > 0) schedule()
  }
  function schedule(): void {
    if (scheduled) return
    scheduled = true
    setImmediate(nextTurn)
  }

  return {
    permit() {
      schedule() // the budget comes back next turn
      if (left > 0 && waiting.length === 0) {
        left--
        return Promise.resolve()
      }
      return new Promise<void>((resolve) => waiting.push(resolve))
    },
  }
}
