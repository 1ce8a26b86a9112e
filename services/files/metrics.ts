import { Counter, Gauge, type Registry } from 'prom-client'

export type RefusalReason =
  | 'invalid_path'
  | 'is_directory'
  | 'unauthorized'
  | 'forbidden'
  | 'too_large'
  | 'quota'
  | 'digest_mismatch'
  | 'conflict'
  | 'precondition_failed'

export interface FileMetrics {
  received: Counter
  sent: Counter
  stored: Counter
  served: Counter
  deleted: Counter<'why'>
  refused: Counter<'reason'>
  inProgress: Gauge<'direction'>
  storedFiles: Gauge
  storedBytes: Gauge
  pulled: Counter<'result'>
  pulledBytes: Counter
  pushed: Counter<'result'>
  pushedBytes: Counter
}

/** The file transfer service's figures on `/metrics` (README, File transfer). */
export function createFileMetrics(registry: Registry): FileMetrics {
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined
  const counter = <L extends string = never>(name: string, help: string, labelNames?: L[]) =>
    existing<Counter<L>>(name) ??
    new Counter<L>({ name, help, registers: [registry], ...(labelNames ? { labelNames } : {}) })
  const gauge = <L extends string = never>(name: string, help: string, labelNames?: L[]) =>
    existing<Gauge<L>>(name) ??
    new Gauge<L>({ name, help, registers: [registry], ...(labelNames ? { labelNames } : {}) })
  return {
    received: counter('ub_files_received_bytes_total', 'File bytes received by PUT'),
    sent: counter('ub_files_sent_bytes_total', 'File bytes sent by GET'),
    stored: counter('ub_files_stored_total', 'Files stored by PUT (201)'),
    served: counter('ub_files_served_total', 'Files (or ranges of them) served by GET'),
    deleted: counter(
      'ub_files_deleted_total',
      'Files removed: by DELETE, expired, or after their command ended',
      ['why']
    ),
    refused: counter('ub_files_refused_total', 'File requests refused, by reason', ['reason']),
    inProgress: gauge('ub_files_transfers_in_progress', 'File transfers streaming now', [
      'direction',
    ]),
    storedFiles: gauge('ub_files_stored', 'Files stored (as this replica last counted)'),
    storedBytes: gauge('ub_files_stored_bytes', 'Bytes of the files stored (as last counted)'),
    pulled: counter(
      'ub_files_pulled_total',
      "Files fetched from an upstream's file service for a GET here (pull-through), by result",
      ['result']
    ),
    pulledBytes: counter('ub_files_pulled_bytes_total', 'Bytes fetched from upstreams'),
    pushed: counter(
      'ub_files_pushed_total',
      "Copies of files put here to an upstream's file service (binding going out), by result",
      ['result']
    ),
    pushedBytes: counter('ub_files_pushed_bytes_total', 'Bytes copied to upstreams'),
  }
}
