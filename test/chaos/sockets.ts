import { readFile, readdir, readlink } from 'node:fs/promises'

const ESTABLISHED = '01'

/**
 * The remote ports of a process's established TCP connections (Linux /proc): which gateway a
 * supervisor's bridge reads from is the gateway port among them.
 */
export async function remotePortsOf(pid: number): Promise<Set<number>> {
  const inodes = new Set<string>()
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const m = /^socket:\[(\d+)\]$/.exec(target)
    if (m) inodes.add(m[1]!)
  }
  const ports = new Set<number>()
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const cols = line.trim().split(/\s+/)
      if (cols.length < 10 || cols[3] !== ESTABLISHED || !inodes.has(cols[9]!)) continue
      ports.add(parseInt(cols[2]!.split(':')[1]!, 16))
    }
  }
  return ports
}
