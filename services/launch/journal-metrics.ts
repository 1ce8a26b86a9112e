import { Counter, type Registry } from 'prom-client'
import { kvJournalStats, type KvJournalStats } from '../common/bus/index.ts'

/**
 * The in-process bus journal's findings on `/metrics` (the journals also log each at open, the
 * damage at error level with its count). Mirrored from plain numbers at scrape time.
 */
export function registerJournalMetrics(registry: Registry): void {
  const counter = (name: string, help: string, key: keyof KvJournalStats) => {
    let last = 0
    return new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const now = kvJournalStats()[key]
        this.inc(now - last)
        last = now
      },
    })
  }
  counter(
    'ub_bus_journal_damaged_records_total',
    'damaged KV journal records skipped at open (checksum or framing); each lost one entry',
    'damagedRecords'
  )
  counter(
    'ub_bus_journal_torn_tails_total',
    'KV journals whose last record was cut short by a crash, cut back at open',
    'tornTails'
  )
  counter(
    'ub_bus_journal_migrated_files_total',
    'KV journals in the older format without checksums, rewritten at open',
    'migratedFiles'
  )
  counter(
    'ub_bus_journal_refused_records_total',
    'KV writes refused for passing busJournalMaxRecordBytes',
    'refusedRecords'
  )
  counter(
    'ub_bus_journal_abandoned_rewrites_total',
    'background journal rewrites given up (an error, or too much written meanwhile); the old file kept',
    'abandonedRewrites'
  )
}
