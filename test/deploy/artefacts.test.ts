import { readdirSync } from 'node:fs'
import { join, posix } from 'node:path'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { knownEnvNames, loadConfig, SERVICE_NAMES } from '../../services/common/config.ts'
import { createOpsRoutes } from '../../services/common/ops-routes.ts'
import { startInstance } from '../helpers/instance.ts'
import {
  composeUbServices,
  compose,
  containerEnv,
  dockerfileStages,
  k8sManifests,
  kustomization,
  named,
  ofKind,
  ROOT,
  ubContainer,
  type Manifest,
  type Obj,
} from './manifests.ts'

/**
 * deploy/compose.yaml, deploy/k8s and deploy/Dockerfile against the code: the keys they set are
 * ones the configuration reads, their ports and probes are where the processes listen and answer,
 * and the Kubernetes layout keeps compose's replicas.
 */
const all = k8sManifests()
const deployments = ofKind(all, 'Deployment').filter((d) => ubContainer(d))
const secret = named(all, 'Secret', 'uns-bridge')
const imageEnv = Object.fromEntries(
  dockerfileStages()
    .at(-1)!
    .filter((i) => i.op === 'ENV')
    .map((i) => i.args.split('=') as [string, string])
)

/** What a Deployment's process runs with: the image's ENV, then the container's env. */
function deploymentConfig(d: Manifest) {
  const env = { ...imageEnv, ...containerEnv(ubContainer(d)!, all) }
  // The Secret's placeholders are refused by design (tested below); the rest must load.
  for (const key of Object.keys(secret.stringData)) delete env[key]
  return loadConfig({ env }).config
}

const servicesOf = (d: Manifest) => deploymentConfig(d).services
const portsOf = (c: Obj) => Object.fromEntries((c.ports as Obj[]).map((p) => [p.name, p]))
const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v)

describe('environment keys', () => {
  const known = new Set(knownEnvNames())
  const sources: Array<[string, string[]]> = [
    ...composeUbServices().map(
      ([name, svc]) => [`compose ${name}`, Object.keys(svc.environment)] as [string, string[]]
    ),
    ...ofKind(all, 'ConfigMap')
      .filter((m) => m.metadata.name === 'uns-bridge')
      .map((m) => [`ConfigMap ${m.metadata.name}`, Object.keys(m.data)] as [string, string[]]),
    [`Secret ${secret.metadata.name}`, Object.keys(secret.stringData)],
    ...deployments.map(
      (d) =>
        [
          `Deployment ${d.metadata.name}`,
          ((ubContainer(d)!.env ?? []) as Obj[]).map((e) => e.name),
        ] as [string, string[]]
    ),
    ['Dockerfile ENV', Object.keys(imageEnv)],
  ]

  it.each(sources)('%s sets only keys the configuration reads', (_where, keys) => {
    expect(keys.length).toBeGreaterThan(0)
    expect(keys.filter((k) => !known.has(k))).toEqual([])
  })

  it('loads every Deployment’s configuration without an error', () => {
    for (const d of deployments) expect(() => deploymentConfig(d), d.metadata.name).not.toThrow()
  })

  it('ships Secret placeholders that the configuration refuses, naming the key', () => {
    const { UB_ADMIN_TOKEN, UB_SECRET_KEY, DATABASE_URL } = secret.stringData
    expect(DATABASE_URL).toMatch(/^postgres:\/\//)
    expect(() => loadConfig({ env: { UB_ADMIN_TOKEN } })).toThrow(/'adminToken'/)
    expect(() => loadConfig({ env: { UB_SECRET_KEY } })).toThrow(/'secretKey'/)
  })
})

describe('Kubernetes layout against deploy/compose.yaml', () => {
  it('lists every manifest file in kustomization.yaml', () => {
    const files = readdirSync(join(ROOT, 'deploy/k8s')).filter((f) => f !== 'kustomization.yaml')
    expect([...kustomization().resources].sort()).toEqual(files.sort())
  })

  it('runs one real service per Deployment, with compose’s replica counts', () => {
    const composeReplicas: Record<string, number> = {}
    for (const [, svc] of composeUbServices()) {
      const name = svc.environment.UB_SERVICES as string
      composeReplicas[name] = (composeReplicas[name] ?? 0) + (svc.deploy?.replicas ?? 1)
    }
    const k8sReplicas: Record<string, number> = {}
    for (const d of deployments) {
      const services = servicesOf(d)
      expect(services).toHaveLength(1)
      expect(SERVICE_NAMES).toContain(services[0])
      k8sReplicas[services[0]!] = (k8sReplicas[services[0]!] ?? 0) + d.spec.replicas
    }
    // Compose runs one handshake API because it publishes the fixed host port 8080; behind a
    // Service, Kubernetes runs two like the rest (handshake replicas are designed to share).
    expect(k8sReplicas).toEqual({ ...composeReplicas, handshake: 2 })
  })

  it('runs NATS as compose does: as many JetStream nodes, routed to each other, R3 buckets', () => {
    const natsInCompose = Object.values(compose().services as Obj).filter((s) =>
      String(s.image).startsWith('nats:')
    ).length
    const sts = named(all, 'StatefulSet', 'nats')
    expect(sts.spec.replicas).toBe(natsInCompose)
    const conf = named(all, 'ConfigMap', 'nats').data['nats.conf'] as string
    expect(conf).toMatch(/jetstream\s*{/)
    const nodes = [...Array(natsInCompose).keys()].map((i) => `nats-${i}.${sts.spec.serviceName}`)
    expect(conf.match(/nats:\/\/[^\s\]]+:6222/g)).toEqual(nodes.map((n) => `nats://${n}:6222`))
    const ubConfig = named(all, 'ConfigMap', 'uns-bridge').data
    expect(ubConfig.NATS_URL).toBe(nodes.map((n) => `nats://${n}:4222`).join(','))
    const composeEnv = composeUbServices()[0]![1].environment
    expect(ubConfig.UB_BUS_REPLICAS).toBe(composeEnv.UB_BUS_REPLICAS)
    expect(Number(ubConfig.UB_BUS_REPLICAS)).toBeLessThanOrEqual(sts.spec.replicas)
  })

  it('budgets disruptions: one of each pair stays, one NATS node at a time goes', () => {
    const pdbs = ofKind(all, 'PodDisruptionBudget')
    for (const d of deployments) {
      const pdb = pdbs.filter((p) =>
        matches(p.spec.selector.matchLabels, d.spec.template.metadata.labels)
      )
      expect(
        pdb.map((p) => p.spec),
        d.metadata.name
      ).toEqual([{ minAvailable: 1, selector: { matchLabels: d.spec.selector.matchLabels } }])
    }
    expect(named(all, 'PodDisruptionBudget', 'nats').spec.maxUnavailable).toBe(1)
  })
})

describe('ports and probes', () => {
  it('declares the ports each process listens on, from its configuration', () => {
    for (const d of deployments) {
      const config = deploymentConfig(d)
      const ports = portsOf(ubContainer(d)!)
      expect(ports.http?.containerPort, d.metadata.name).toBe(config.httpPort)
      const mqtt = config.services.includes('gateway') ? config.mqttPort : undefined
      expect(ports.mqtt?.containerPort, d.metadata.name).toBe(mqtt)
    }
    const { httpPort, mqttPort } = loadConfig({ env: imageEnv }).config
    const exposed = dockerfileStages()
      .at(-1)!
      .filter((i) => i.op === 'EXPOSE')
      .flatMap((i) => i.args.split(/\s+/).map(Number))
    expect(exposed.sort()).toEqual([httpPort, mqttPort].sort())
  })

  it('points every Service at a named port of the pods it selects', () => {
    for (const svc of ofKind(all, 'Service').filter((s) => s.spec.clusterIP !== 'None')) {
      const targets = deployments.filter((d) =>
        matches(svc.spec.selector, d.spec.template.metadata.labels)
      )
      expect(targets.length, svc.metadata.name).toBeGreaterThan(0)
      for (const d of targets) {
        for (const port of svc.spec.ports as Obj[])
          expect(Object.keys(portsOf(ubContainer(d)!)), svc.metadata.name).toContain(
            port.targetPort
          )
      }
    }
  })

  it('gives a supervisor without a gateway in its process a Service of gateways to read from', () => {
    const alone = deployments.filter((d) => {
      const { services } = deploymentConfig(d)
      return services.includes('supervisor') && !services.includes('gateway')
    })
    expect(alone.length).toBeGreaterThan(0)
    for (const d of alone) {
      // Unset, it reads mqtt://127.0.0.1:<mqttPort>, where nothing listens in this pod.
      const url = new URL(deploymentConfig(d).localBrokerUrl ?? 'mqtt://127.0.0.1')
      const svc = named(all, 'Service', url.hostname)
      const port = (svc.spec.ports as Obj[]).find((p) => p.port === Number(url.port))
      const gateways = deployments.filter((g) =>
        matches(svc.spec.selector, g.spec.template.metadata.labels)
      )
      expect(gateways.map((g) => deploymentConfig(g).services)).toEqual([['gateway']])
      expect(portsOf(ubContainer(gateways[0]!)!)[port?.targetPort]?.containerPort).toBe(
        deploymentConfig(gateways[0]!).mqttPort
      )
    }
  })

  const probes = deployments.flatMap((d) =>
    ['startupProbe', 'livenessProbe', 'readinessProbe'].map((kind) => ({
      where: `${d.metadata.name} ${kind}`,
      httpGet: ubContainer(d)![kind]?.httpGet as Obj | undefined,
    }))
  )
  const probePaths = [...new Set(probes.map((p) => p.httpGet?.path as string))]

  it('probes every uns-bridge container on its http port', () => {
    for (const { where, httpGet } of probes) expect(httpGet?.port, where).toBe('http')
  })

  it('probes routes that a process without the handshake API serves', async () => {
    expect(probePaths.sort()).toEqual(['/healthz', '/readyz'])
    const ops = createOpsRoutes({
      ready: async () => ({ ok: true, checks: {} }),
      metrics: new Registry(),
    })
    for (const path of probePaths) expect((await ops.request(path)).status, path).toBe(200)
  })

  it('probes routes that a started instance answers with 200', async () => {
    await using inst = await startInstance()
    for (const path of probePaths) {
      expect((await fetch(inst.httpUrl + path)).status, path).toBe(200)
    }
  }, 90_000)
})

describe('security', () => {
  it('runs every container as non-root on a read-only root, writing only to emptyDirs', () => {
    for (const w of [...deployments, named(all, 'StatefulSet', 'nats')]) {
      const pod = w.spec.template.spec
      for (const c of pod.containers as Obj[]) {
        const where = `${w.metadata.name}/${c.name}`
        expect(c.securityContext?.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, where).toBe(
          true
        )
        expect(c.securityContext?.readOnlyRootFilesystem, where).toBe(true)
        expect(c.resources?.requests?.memory && c.resources?.limits?.memory, where).toBeTruthy()
        expect(c.resources?.requests?.cpu && c.resources?.limits?.cpu, where).toBeTruthy()
      }
    }
    for (const d of deployments) {
      const volumes = d.spec.template.spec.volumes as Obj[]
      const writable = (ubContainer(d)!.volumeMounts as Obj[])
        .filter((m) => volumes.find((v) => v.name === m.name)?.emptyDir)
        .map((m) => m.mountPath as string)
      const under = (path: string) =>
        writable.some((m) => !posix.relative(m, path).startsWith('..'))
      // The data folder, and the temp folder where tsx caches what it compiled.
      for (const path of [deploymentConfig(d).dataDir, '/tmp'])
        expect(under(path), `${d.metadata.name} ${path}`).toBe(true)
    }
  })
})
