/**
 * A repeat this soon after the first signal is the same request delivered twice, not an
 * operator insisting: Ctrl-C on `npm start` reaches node from the terminal and again from npm,
 * which forwards SIGINT and SIGTERM to its script a few ms later.
 */
export const REPEAT_GRACE_MS = 1_000

/** Resolves on the first SIGINT or SIGTERM; a later one (after REPEAT_GRACE_MS) exits at once. */
export function onShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let firstAt: number | undefined
    const handler = (signal: NodeJS.Signals) => {
      if (firstAt === undefined) {
        firstAt = Date.now()
        resolve(signal)
      } else if (Date.now() - firstAt >= REPEAT_GRACE_MS) process.exit(130)
    }
    process.on('SIGINT', handler)
    process.on('SIGTERM', handler)
  })
}
