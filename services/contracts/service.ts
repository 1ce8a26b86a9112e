import type { Registry } from 'prom-client'
import type { Bus } from '../common/bus/bus.ts'
import type { Config } from '../common/config.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from './store-client.ts'

/** What every service gets from the launcher: the wiring, never a global. */
export interface ServiceContext {
  config: Config
  /** Config keys the user set (file, env or flag) rather than left at their defaults. */
  explicit: ReadonlySet<string>
  bus: Bus
  store: StoreClient
  log: Logger
  instanceId: string
  /** Prometheus registry that `/metrics` serves; services register their own metrics in it. */
  metrics: Registry
}

/** A started service, as the launcher sees it. */
export interface RunningService {
  name: string
  /** Human-readable lines the launcher prints ("mqtt://0.0.0.0:1883"). */
  endpoints: string[]
  close(): Promise<void>
}
