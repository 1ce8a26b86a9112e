import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse, parseAllDocuments } from 'yaml'

/** Readers of the deployable artefacts in deploy/, for test/deploy/*.test.ts. */

export const ROOT = new URL('../..', import.meta.url).pathname
const K8S = join(ROOT, 'deploy/k8s')
/** The image name the manifests use for uns-bridge (kustomization.yaml sets its tag). */
export const UB_IMAGE = 'uns-bridge'

// The shapes read here, loosely: a test that meets another shape fails on it, which is the point.
export type Obj = Record<string, any>

export interface Manifest extends Obj {
  kind: string
  metadata: { name: string; labels?: Record<string, string> }
  /** The file under deploy/k8s it came from. */
  file: string
}

export function kustomization(): Obj {
  return parse(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8')) as Obj
}

/** Every object of every file kustomization.yaml lists, in order. */
export function k8sManifests(): Manifest[] {
  return (kustomization().resources as string[]).flatMap((file) =>
    parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))
      .map((doc) => {
        if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0]!.message}`)
        return doc.toJS() as Obj | null
      })
      .filter((obj): obj is Obj => obj !== null)
      .map((obj) => ({ ...obj, file }) as Manifest)
  )
}

export const ofKind = (all: Manifest[], kind: string) => all.filter((m) => m.kind === kind)

export function named(all: Manifest[], kind: string, name: string): Manifest {
  const found = all.find((m) => m.kind === kind && m.metadata.name === name)
  if (!found) throw new Error(`no ${kind} ${name} in deploy/k8s`)
  return found
}

/** The uns-bridge container of a Deployment, or undefined for other workloads. */
export const ubContainer = (workload: Manifest): Obj | undefined =>
  (workload.spec.template.spec.containers as Obj[]).find((c) => c.image === UB_IMAGE)

/** Name → value of what a container's envFrom and env set (a secretRef's keys map to its values). */
export function containerEnv(container: Obj, all: Manifest[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const from of (container.envFrom ?? []) as Obj[]) {
    if (from.configMapRef) Object.assign(env, named(all, 'ConfigMap', from.configMapRef.name).data)
    if (from.secretRef) Object.assign(env, named(all, 'Secret', from.secretRef.name).stringData)
  }
  for (const { name, value } of (container.env ?? []) as Obj[]) env[name] = value ?? ''
  return env
}

/** deploy/compose.yaml with its anchors and `<<` merges resolved. */
export function compose(): Obj {
  return parse(readFileSync(join(ROOT, 'deploy/compose.yaml'), 'utf8'), { merge: true }) as Obj
}

/** The compose services that run uns-bridge (the others are NATS, Postgres, HAProxy). */
export function composeUbServices(): Array<[string, Obj]> {
  return Object.entries(compose().services as Obj).filter(([, svc]) =>
    String(svc.command ?? '').includes('services/launch/')
  )
}

export interface DockerInstruction {
  op: string
  args: string
}

/** deploy/Dockerfile as stages of instructions: continuation lines joined, comments dropped. */
export function dockerfileStages(): DockerInstruction[][] {
  const text = readFileSync(join(ROOT, 'deploy/Dockerfile'), 'utf8').replace(/\\\n/g, ' ')
  const stages: DockerInstruction[][] = []
  for (const line of text.split('\n').map((l) => l.trim())) {
    if (!line || line.startsWith('#')) continue
    const [op, ...rest] = line.split(/\s+/)
    const instruction = { op: op!.toUpperCase(), args: rest.join(' ') }
    if (instruction.op === 'FROM') stages.push([])
    stages.at(-1)!.push(instruction)
  }
  return stages
}
