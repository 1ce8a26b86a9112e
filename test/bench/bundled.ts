/**
 * A bench's broker or bridge process runs from a bundle made as the CLI's is (services/launch/
 * build.mjs), so it measures the code as `uns-bridge start` runs it: through tsx's loader every
 * function is wrapped to keep its name, about 5 % of a loaded gateway's CPU that a user's process
 * never spends. Made once per bench process and entry.
 */
import { fileURLToPath } from 'node:url'

// Imported by its path, so a bundle of a bench leaves build.mjs out and it runs as itself: bundled,
// its own `import.meta.url` and the plugin's text naming it would be rewritten alike.
const BUILD = new URL('../../services/launch/build.mjs', import.meta.url).href
type BuildEntry = (entry: string, name: string) => Promise<string>

const made = new Map<string, Promise<string>>()

/** The path of `entry` (a file beside this one) bundled; `BENCH_FROM_SOURCE=1` keeps tsx. */
export function bundled(entry: string): Promise<{ path: string; nodeArgs: string[] }> {
  const source = fileURLToPath(new URL(entry, import.meta.url))
  if (process.env.BENCH_FROM_SOURCE)
    return Promise.resolve({ path: source, nodeArgs: ['--import', 'tsx'] })
  let path = made.get(entry)
  if (!path) {
    const name = `bench-${entry.replace(/^\.\/|\.ts$/g, '')}`
    path = import(BUILD).then(({ buildEntry }: { buildEntry: BuildEntry }) =>
      buildEntry(source, name)
    )
    made.set(entry, path)
  }
  return path.then((p) => ({ path: p, nodeArgs: ['--enable-source-maps'] }))
}
