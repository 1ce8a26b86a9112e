/**
 * File transfer benchmark over real sockets: MB/s of PUT and GET of a 100 MB file through a real
 * instance's `/te/v1/files`, beside the same file served by a plain static file server (Node's
 * own `http` piping `fs.createReadStream`) in the same run, and the instance's peak RSS.
 * Each transfer is timed from the request to the last byte; GETs are the best of three.
 * Bridged: a second instance bound `in` to the first fetches the file through its pull-through
 * cache on the first GET (timed: the WAN fetch and the local answer together), then serves its
 * copy (best of three), over loopback here.
 */
import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, statSync } from 'node:fs'
import { rssBytes } from './proc.ts'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { finished } from 'node:stream/promises'
import { bridge } from '../helpers/bridging.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'

const MiB = 1_048_576
const SIZE_MB = Number(process.env.UB_BENCH_FILE_MB ?? 100)
const ROUNDS = 3
const round = (x: number, digits = 1) => Number(x.toFixed(digits))

/** Seconds for one request with `body` (a file path, streamed) to answer and be read to the end. */
function timed(url: string, method: string, bodyFile?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now()
    const headers = bodyFile ? { 'content-length': String(statSync(bodyFile).size) } : {}
    const req = httpRequest(url, { method, headers }, (res) => {
      if ((res.statusCode ?? 0) >= 300) reject(new Error(`${method} ${url} → ${res.statusCode}`))
      res.on('data', () => {})
      res.on('end', () => resolve((performance.now() - start) / 1_000))
      res.on('error', reject)
    })
    req.on('error', reject)
    if (bodyFile) createReadStream(bodyFile).pipe(req)
    else req.end()
  })
}

async function bestOf(n: number, once: () => Promise<number>): Promise<number> {
  let best = Infinity
  for (let i = 0; i < n; i++) best = Math.min(best, await once())
  return best
}

export async function runFilesBench(): Promise<unknown> {
  const dir = await mkdtemp(join(tmpdir(), 'ub-bench-files-'))
  const file = join(dir, 'payload.bin')
  const out = createWriteStream(file)
  for (let i = 0; i < SIZE_MB; i++) out.write(randomBytes(MiB))
  out.end()
  await finished(out)
  const mb = (SIZE_MB * MiB) / 1e6

  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(SIZE_MB * MiB) })
    createReadStream(file).pipe(res)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const staticUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/payload.bin`

  const inst = await startInstance({ args: ['--files-max-file-bytes', String(2 * SIZE_MB * MiB)] })
  const pid = inst.process.child.pid!
  let peak = rssBytes(pid)
  const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 50)
  try {
    const url = `${inst.httpUrl}/te/v1/files/bench/payload.bin`
    const put = await bestOf(ROUNDS, () => timed(url, 'PUT', file))
    const get = await bestOf(ROUNDS, () => timed(url, 'GET'))
    const staticGet = await bestOf(ROUNDS, () => timed(staticUrl, 'GET'))
    const bridged = await bridgedGets(inst)
    const result = {
      bench: 'files',
      fileMB: round(mb),
      local: { getMBps: round(mb / get), putMBps: round(mb / put) },
      staticServer: { getMBps: round(mb / staticGet) },
      ratioGet: round(staticGet / get, 2),
      bridged: {
        firstGetMBps: round(mb / bridged.first),
        getMBps: round(mb / bridged.cached),
      },
      peakRssMB: round(peak / MiB, 0),
    }
    console.log(`file ${result.fileMB} MB, best of ${ROUNDS}`)
    console.log(
      `  GET  uns-bridge ${result.local.getMBps} MB/s   static server ${result.staticServer.getMBps} MB/s   ratio ${result.ratioGet}`
    )
    console.log(`  PUT  uns-bridge ${result.local.putMBps} MB/s`)
    console.log(
      `  bridged GET: first (fetched from the upstream) ${result.bridged.firstGetMBps} MB/s, then ${result.bridged.getMBps} MB/s`
    )
    console.log(`  peak RSS of the instance ${result.peakRssMB} MiB`)
    console.log(JSON.stringify(result))
    return result
  } finally {
    clearInterval(sampler)
    await inst.stop()
    server.close()
    await rm(dir, { recursive: true, force: true })
  }
}

/** An edge instance bound `in` to `cloud`: the first GET of the cloud's file, then its copy. */
async function bridgedGets(cloud: Instance): Promise<{ first: number; cached: number }> {
  const edge = await startInstance({
    args: ['--files-max-file-bytes', String(2 * SIZE_MB * MiB)],
  })
  try {
    await bridge(edge, cloud, [{ source: 'site1', target: 'bench', direction: 'in' }])
    // The cloud's file is at bench/payload.bin: the edge serves it as site1/payload.bin.
    const url = `${edge.httpUrl}/te/v1/files/site1/payload.bin`
    const first = await timed(url, 'GET')
    const cached = await bestOf(ROUNDS, () => timed(url, 'GET'))
    return { first, cached }
  } finally {
    await edge.stop()
  }
}
