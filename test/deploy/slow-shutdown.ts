// A process that shuts down the way `uns-bridge start` does, with a cleanup slow enough that a
// second signal lands in the middle of it (test/deploy/shutdown-signals.test.ts runs it).
import { onShutdownSignal } from '../../services/launch/runtime/signals.ts'

const CLEANUP_MS = 3_000

const shutdown = onShutdownSignal()
const keepAlive = setInterval(() => {}, 60_000) // signal listeners alone do not hold the loop
console.log('listening')
console.log(`stopping on ${await shutdown}`)
await new Promise((r) => setTimeout(r, CLEANUP_MS))
clearInterval(keepAlive)
console.log('stopped')
