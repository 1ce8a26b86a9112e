/**
 * What benchmarks read of a process from /proc (Linux): CPU time and resident memory.
 */
import { readFileSync } from 'node:fs'

/** Clock ticks per second of utime and stime (USER_HZ: 100 on Linux whatever the kernel's HZ). */
const TICKS_PER_SEC = 100

/** User + system CPU seconds used so far by a process, or by several together. */
export function cpuSeconds(pids: number | readonly number[]): number {
  let ticks = 0
  for (const pid of typeof pids === 'number' ? [pids] : pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // After the command name, which may itself hold ") ": fields[0] is the state (field 3).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(fields[11]) + Number(fields[12]) // utime, stime
  }
  return ticks / TICKS_PER_SEC
}

/** Resident memory of a process, bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmRSS for process ${pid}`)
  return Number(m[1]) * 1_024
}
