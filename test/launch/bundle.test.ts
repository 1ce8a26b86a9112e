import { execFile } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'

const ROOT = new URL('../..', import.meta.url).pathname

/**
 * bin.mjs runs the CLI from a bundle made by build.mjs. Here on a two-file CLI in a folder of its
 * own (its own node_modules/.cache; tsx linked from this repository's, esbuild found through it),
 * so the real bundle is not touched.
 */
describe('the bundle bin.mjs runs', () => {
  let dir = ''
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  const cache = () => join(dir, 'node_modules', '.cache', 'uns-bridge')

  function tree(): { run: () => Promise<string>; bundles: () => string[] } {
    dir = mkdtempSync(join(tmpdir(), 'ub-bundle-'))
    const launch = join(dir, 'services', 'launch')
    mkdirSync(launch, { recursive: true })
    for (const f of ['bin.mjs', 'build.mjs'])
      cpSync(join(ROOT, 'services/launch', f), join(launch, f))
    cpSync(join(ROOT, 'tsconfig.json'), join(dir, 'tsconfig.json'))
    writeFileSync(join(dir, 'package.json'), '{"type": "module"}')
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(join(ROOT, 'node_modules', 'tsx'), join(dir, 'node_modules', 'tsx'))
    writeFileSync(
      join(launch, 'cli.ts'),
      "import { value } from './value.ts'\n" +
        "const here: string = new URL('./cli.ts', import.meta.url).pathname\n" +
        'console.log(value, here)\n'
    )
    return {
      run: () =>
        new Promise((resolve, reject) =>
          execFile(process.execPath, [join(launch, 'bin.mjs')], { timeout: 30_000 }, (err, out) =>
            err ? reject(err) : resolve(out.trim())
          )
        ),
      bundles: () => readdirSync(cache()).filter((f) => /^cli-.*\.mjs$/.test(f)),
    }
  }

  it('runs the sources as they are: a change of one byte, its size and mtime kept, is run', async () => {
    const { run, bundles } = tree()
    const value = join(dir, 'services', 'launch', 'value.ts')
    writeFileSync(value, "export const value = 'one'\n")
    const cli = join(dir, 'services', 'launch', 'cli.ts')
    // import.meta.url is the source file's, not the bundle's (migrations, assets, package.json).
    expect(await run()).toBe(`one ${cli}`)
    const [first] = bundles()
    expect(first).toBeDefined()
    expect(await run()).toBe(`one ${cli}`)
    expect(bundles()).toEqual([first])

    const { atime, mtime } = statSync(value)
    writeFileSync(value, "export const value = 'two'\n")
    utimesSync(value, atime, mtime) // what an mtime check would miss
    // The old bundle is dropped by the next build once it is 10 minutes old.
    const hourAgo = new Date(Date.now() - 3_600_000)
    utimesSync(join(cache(), first!), hourAgo, hourAgo)
    expect(await run()).toBe(`two ${cli}`)
    expect(bundles()).toHaveLength(1)
    expect(bundles()).not.toEqual([first])
  })

  it('runs from source when the bundle cannot be made', async () => {
    const { run } = tree()
    writeFileSync(join(dir, 'services', 'launch', 'value.ts'), "export const value = 'src'\n")
    // A cache that cannot be written (a read-only node_modules in an image, say).
    writeFileSync(join(dir, 'node_modules', '.cache'), 'not a folder')
    expect(await run()).toMatch(/^src /)
  })
})
