/**
 * A web ReadableStream (what a Response body is) that pulls from an async iterable one chunk at
 * a time, so a slow client holds back the read rather than filling memory; a cancelled response
 * (client gone) returns the iterator, which releases the file or the consumer it reads.
 */
export function fromAsyncIterable(
  source: AsyncIterable<Uint8Array>,
  { onBytes, onEnd }: { onBytes?: (n: number) => void; onEnd?: () => void } = {}
): ReadableStream<Uint8Array> {
  const it = source[Symbol.asyncIterator]()
  let ended = false
  const end = () => {
    if (ended) return
    ended = true
    onEnd?.()
  }
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { value, done } = await it.next()
          if (done) {
            end()
            controller.close()
            return
          }
          onBytes?.(value.byteLength)
          controller.enqueue(value)
        } catch (err) {
          end()
          controller.error(err)
        }
      },
      async cancel() {
        end()
        await it.return?.()
      },
    },
    { highWaterMark: 0 }
  )
}

/** Bytes of a refused upload read and thrown away so the client can read the answer. */
export const DRAIN_MAX_BYTES = 64 * 1_048_576

/**
 * A request body as an iterable that a put may stop early without cancelling it: cancelling
 * destroys the socket, and a client still sending then sees a reset instead of the 413 or 400.
 * `drain` reads what is left (up to DRAIN_MAX_BYTES, then cancels: the connection closes).
 */
export function uploadBody(stream: ReadableStream<Uint8Array> | null): {
  chunks: AsyncIterable<Uint8Array>
  drain(): Promise<void>
} {
  if (!stream) return { chunks: (async function* () {})(), drain: async () => {} }
  const reader = stream.getReader()
  const chunks: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]: () => ({
      next: async () => {
        const { done, value } = await reader.read()
        return done ? { done: true, value: undefined } : { done: false, value }
      },
      // Stopping early leaves the body to `drain`.
      return: async () => ({ done: true, value: undefined }),
    }),
  }
  return {
    chunks,
    async drain() {
      try {
        for (let read = 0; read <= DRAIN_MAX_BYTES;) {
          const { done, value } = await reader.read()
          if (done) return
          read += value.byteLength
        }
        await reader.cancel()
      } catch {
        // the client went away: nothing to drain
      }
    },
  }
}
