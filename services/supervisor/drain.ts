import type { Link } from './bridge-types.ts'

export const DRAIN_MS = 2_000 // at most this long for the upstream's acknowledgements when stopping

/**
 * A link stopping on purpose (shutdown, a rolling restart, a deactivation) takes no more local
 * messages and waits, bounded, for the upstream to acknowledge what is in flight, so each is
 * acknowledged locally too: its successor does not send them again (the duplicates of a restart
 * were up to one window per link). Only the session's socket is paused; the upstream's
 * acknowledgements keep coming.
 */
export async function drainWindow(link: Link, ms: number): Promise<void> {
  const fw = link.fw
  if (!fw || fw.waiting === 0) return
  link.draining = true
  link.local?.pause()
  const deadline = Date.now() + ms
  while (fw.waiting > 0 && link.fw === fw && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5))
  }
}
