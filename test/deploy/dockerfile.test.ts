import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../services/common/config.ts'
import { relativeImports } from '../architecture/boundaries.ts'
import { dockerfileStages, ROOT, type DockerInstruction } from './manifests.ts'

/**
 * deploy/Dockerfile read statically (no Docker on the test machines): what it installs, copies
 * and runs, against package.json, the import graph and the configuration.
 */
const stages = dockerfileStages()
const final = stages.at(-1)!
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>
}
const execForm = (i: DockerInstruction | undefined) => JSON.parse(i?.args ?? 'null') as string[]
const one = (op: string) => {
  const found = final.filter((i) => i.op === op)
  expect(found.map((i) => i.op)).toEqual([op])
  return found[0]!
}
/** Sources the final stage copies from the build context (not from another stage). */
const contextCopies = final
  .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
  .flatMap((i) => i.args.split(/\s+/).slice(0, -1))

/** Every repository file `start` loads, following relative static and dynamic imports. */
function importGraph(entry: string): string[] {
  const seen = new Set([entry])
  for (const file of seen) {
    for (const spec of relativeImports(readFileSync(join(ROOT, file), 'utf8'))) {
      const target = relative(ROOT, resolve(dirname(join(ROOT, file)), spec))
      if (existsSync(join(ROOT, target))) seen.add(target)
    }
  }
  return [...seen]
}

describe('deploy/Dockerfile', () => {
  it('installs runtime dependencies only, in a stage of their own', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2)
    const deps = stages.slice(0, -1).find((s) => s.some((i) => /npm ci\b.*--omit=dev/.test(i.args)))
    expect(deps).toBeDefined()
    const stageName = deps![0]!.args.split(/\s+AS\s+/i)[1]
    expect(final.some((i) => i.op === 'COPY' && i.args.startsWith(`--from=${stageName} `))).toBe(
      true
    )
  })

  it('runs the CLI with node itself, its --import a runtime dependency', () => {
    const entrypoint = execForm(one('ENTRYPOINT'))
    const command = [...entrypoint, ...execForm(one('CMD'))]
    expect(command[0]).toBe('node') // not npm or a shell: signals reach the process
    expect(command.slice(-2)).toEqual(['services/launch/cli.ts', 'start'])
    const imported = command.filter((_, i) => command[i - 1] === '--import')
    expect(imported).toEqual(['tsx'])
    for (const name of imported) expect(Object.keys(pkg.dependencies)).toContain(name)
  })

  it('copies what start loads and nothing the image does not run', () => {
    expect(contextCopies.sort()).toEqual(
      ['db', 'machines', 'package.json', 'services', 'tsconfig.json'].sort()
    )
    const outside = importGraph('services/launch/cli.ts').filter(
      (file) => !contextCopies.some((root) => file === root || file.startsWith(root + '/'))
    )
    expect(outside).toEqual([])
  })

  it('runs as a user that is not root', () => {
    const user = one('USER').args
    expect(user).not.toMatch(/^(root|0)(:|$)/)
    expect(final.findIndex((i) => i.op === 'USER')).toBeLessThan(
      final.findIndex((i) => i.op === 'ENTRYPOINT')
    )
  })

  it('exposes and health-checks the ports the configuration listens on', () => {
    const env = Object.fromEntries(
      final.filter((i) => i.op === 'ENV').map((i) => i.args.split('=') as [string, string])
    )
    const { httpPort, mqttPort } = loadConfig({ env }).config
    const exposed = one('EXPOSE').args.split(/\s+/).map(Number)
    expect(exposed.sort()).toEqual([httpPort, mqttPort].sort())
    const check = one('HEALTHCHECK').args
    expect(check).toContain(`127.0.0.1:' + (process.env.UB_HTTP_PORT || ${httpPort}) + '/healthz'`)
    expect(execForm({ op: 'CMD', args: check.slice(check.indexOf('CMD') + 4) })[0]).toBe('node')
  })
})

describe('.dockerignore', () => {
  it('ignores everything but what the Dockerfile copies', () => {
    const lines = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
    expect(lines[0]).toBe('*')
    const depsCopies = stages
      .slice(0, -1)
      .flat()
      .filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
    const allowed = lines.slice(1).map((l) => l.replace(/^!/, ''))
    expect(allowed.sort()).toEqual([...new Set([...contextCopies, ...depsCopies])].sort())
  })
})
