import { mkdtempSync, rmSync } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'
import { bucketName } from '../../services/common/bus/bus.ts'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { blobsContract } from './blobs.contract.ts'

// One hub and one data folder per file: buses with the same prefix share both, as replicas
// share a NATS server; the folder lets the suite see what a refused put left on disk.
const hub = createInProcessHub()
const dataDir = mkdtempSync(join(tmpdir(), 'ub-blobs-contract-'))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

async function footprint(dir: string): Promise<{ bytes: number; items: number }> {
  let bytes = 0
  let items = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue
    items++
    bytes += (await stat(join(e.parentPath, e.name))).size
  }
  return { bytes, items }
}

blobsContract(
  'in-process',
  async ({ prefix = uniquePrefix('mem') } = {}) => createInProcessBus({ prefix, hub, dataDir }),
  (bus, bucket) => footprint(join(dataDir, 'blobs', bucketName(bus.prefix, bucket)))
)
