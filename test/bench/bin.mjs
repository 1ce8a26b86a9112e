// `npm run bench`: the benchmarks run from a bundle made as the CLI's is (services/launch/
// build.mjs), so gateways they start in this process run the code as `uns-bridge start` does,
// not through tsx's loader (test/bench/bundled.ts says what that costs). BENCH_FROM_SOURCE=1
// runs them through tsx instead.
import { fileURLToPath } from 'node:url'

const run = fileURLToPath(new URL('./run.ts', import.meta.url))
if (process.env.BENCH_FROM_SOURCE) {
  const { register } = await import('tsx/esm/api')
  register()
  await import(run)
} else {
  const { buildEntry } = await import('../../services/launch/build.mjs')
  process.setSourceMapsEnabled(true)
  await import(await buildEntry(run, 'bench-run'))
}
