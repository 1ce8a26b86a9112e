/**
 * `npm run bench -- <name…>`: runs the named benchmarks (all when none is named). Each prints
 * its figures beside its anchor from the same run, and ends with one JSON line.
 */
const BENCHES: Record<string, () => Promise<unknown>> = {
  lifecycle: async () => (await import('./lifecycle.ts')).runLifecycleBench(),
  api: async () => (await import('./api.ts')).runApiBench(),
  bridge: async () => (await import('./bridge.ts')).runBridgeBench(),
  hold: async () => (await import('./bridge-hold.ts')).runHoldBench(),
  gateway: async () => (await import('./gateway.ts')).runGatewayBench(),
  isolation: async () => (await import('./isolation.ts')).runIsolationBench(),
  scale: async () => (await import('./scale.ts')).runScaleBench(),
  files: async () => (await import('./files.ts')).runFilesBench(),
  start: async () => (await import('./start.ts')).runStartBench(),
  supervisor: async () => (await import('./supervisor-scale.ts')).runSupervisorScaleBench(),
}

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'))
const unknown = wanted.filter((w) => !(w in BENCHES))
if (unknown.length) {
  console.error(
    `unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(BENCHES).join(', ')}`
  )
  process.exit(2)
}
for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
  console.error(`\n== bench ${name} ==`)
  await BENCHES[name]!()
}
process.exit(0)
