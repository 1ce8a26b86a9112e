// The CLI as one plain-JS file, so a start does not pay tsx's loader (about half a second of CPU
// on a 2-core machine, README Benchmarks). Made by esbuild (tsx brings it) into
// node_modules/.cache/uns-bridge, named by a hash of exactly the bytes it was made from: a start
// hashes the same files again and runs the bundle only when every one is unchanged. Plain JS:
// this runs before anything can read TypeScript.
import { createHash } from 'node:crypto'
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const ENTRY = join(ROOT, 'services', 'launch', 'cli.ts')
const CACHE = join(ROOT, 'node_modules', '.cache', 'uns-bridge')
const INPUTS = join(CACHE, 'cli.inputs.json')
/** Besides the sources, what decides the output: this file's options and tsconfig's. */
const FIXED = [fileURLToPath(import.meta.url), join(ROOT, 'tsconfig.json')]

/** One hash over each file's path (from the root) and bytes; null when one is missing. */
function hashOf(files) {
  const hash = createHash('sha256')
  for (const [path, bytes] of files) hash.update(`${relative(ROOT, path)}\0`).update(bytes)
  return hash.digest('hex').slice(0, 20)
}

const byPath = ([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)
const read = (paths) => paths.map((path) => [path, readFileSync(path)]).sort(byPath)

/** The bundle made from the sources as they are now, or null (none yet, or one changed). */
export function freshBundle() {
  try {
    const inputs = JSON.parse(readFileSync(INPUTS, 'utf8')).map((path) => join(ROOT, path))
    const bundle = join(CACHE, `cli-${hashOf(read([...FIXED, ...inputs]))}.mjs`)
    return existsSync(bundle) ? bundle : null
  } catch {
    return null
  }
}

/** Make the bundle from the sources now; its path, or null when it cannot be made here. */
export async function buildBundle() {
  try {
    const { bytes, compiled } = await compile(ENTRY)
    const hash = hashOf([...read(FIXED), ...compiled].sort(byPath))
    const bundle = join(CACHE, `cli-${hash}.mjs`)
    // Written beside and renamed: a start never reads half a file, and two builds at once agree.
    writeAtomically(bundle, bytes)
    const inputs = [...compiled.keys()].map((path) => relative(ROOT, path).split(sep).join('/'))
    writeAtomically(INPUTS, JSON.stringify(inputs.sort()))
    dropOtherBundles(bundle)
    return bundle
  } catch {
    return null
  }
}

/**
 * Another entry (a benchmark's broker process) bundled as the CLI is, so it runs the code as
 * `uns-bridge start` does and not through tsx's loader, whose per-function name keeping costs a
 * loaded gateway about 5 % of its CPU. Written to the cache as `<name>.mjs`; its path.
 */
export async function buildEntry(entry, name) {
  const { bytes } = await compile(entry)
  const path = join(CACHE, `${name}.mjs`)
  writeAtomically(path, bytes)
  return path
}

/** One entry and everything it imports from the repository as one ESM file, and its inputs. */
async function compile(entry) {
  // A cache that cannot be written (a read-only install) is known before esbuild runs.
  mkdirSync(CACHE, { recursive: true })
  accessSync(CACHE, constants.W_OK)
  const require = createRequire(createRequire(import.meta.url).resolve('tsx'))
  const esbuild = require('esbuild')
  const compiled = new Map()
  const result = await esbuild
    .build({
      entryPoints: [entry],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      tsconfig: join(ROOT, 'tsconfig.json'),
      outfile: join(CACHE, 'out.mjs'),
      sourcemap: 'inline',
      sourcesContent: false,
      write: false,
      logLevel: 'silent',
      plugins: [keepModuleUrls(compiled)],
    })
    // esbuild's service is a child process: not left running beside the fabric.
    .finally(() => esbuild.stop())
  return { bytes: result.outputFiles[0].contents, compiled }
}

/**
 * Each module's `import.meta.url` stays its source file's (found from the bundle's own), so
 * `new URL('./migrations', import.meta.url)` and friends point where they did. The bytes read
 * here are the ones hashed: the name can only describe what was compiled.
 */
function keepModuleUrls(compiled) {
  return {
    name: 'keep-module-urls',
    setup(build) {
      build.onLoad({ filter: /\.(ts|json)$/ }, (args) => {
        if (args.path.includes(`${sep}node_modules${sep}`)) return undefined
        const bytes = readFileSync(args.path)
        compiled.set(args.path, bytes)
        const fromBundle = relative(CACHE, args.path).split(sep).join('/')
        const url = `new URL(${JSON.stringify(fromBundle)}, import.meta.url).href`
        const text = bytes.toString('utf8').replaceAll('import.meta.url', url)
        return { contents: text, loader: args.path.endsWith('.json') ? 'json' : 'ts' }
      })
    },
  }
}

function writeAtomically(path, contents) {
  const partial = `${path}.${process.pid}`
  writeFileSync(partial, contents)
  renameSync(partial, path)
}

/**
 * Bundles of older sources are not run again; one is kept a while, as a start that found it
 * fresh a moment before the sources changed may be about to import it.
 */
function dropOtherBundles(keep) {
  const old = Date.now() - 10 * 60_000
  for (const name of readdirSync(CACHE)) {
    const path = join(CACHE, name)
    if (!/^cli-[0-9a-f]+\.mjs$/.test(name) || path === keep) continue
    if (statSync(path, { throwIfNoEntry: false })?.mtimeMs < old) rmSync(path, { force: true })
  }
}
