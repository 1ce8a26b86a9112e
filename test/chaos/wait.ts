export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Call `fn` until it resolves; after `timeoutMs` its last error is thrown, prefixed with `what`. */
export async function retry<T>(
  fn: () => Promise<T>,
  { timeoutMs, what, everyMs = 250 }: { timeoutMs: number; what: string; everyMs?: number }
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${String(err)}`, {
          cause: err,
        })
      }
      await sleep(everyMs)
    }
  }
}

/** Wait until `check` returns true (errors count as false). */
export async function until(
  check: () => boolean | Promise<boolean>,
  opts: { timeoutMs: number; what: string; everyMs?: number }
): Promise<void> {
  await retry(async () => {
    if (!(await check())) throw new Error('not yet')
  }, opts)
}
