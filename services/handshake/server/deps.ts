import { OpenAPIHono } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { Bus } from '../../common/bus/bus.ts'
import type { Logger } from '../../common/log.ts'
import type { EventActor } from '../../contracts/store.ts'
import type { StoreClient } from '../../contracts/store-client.ts'
import type { RemoteAddress } from './client-ip.ts'
import { clientIp } from './client-ip.ts'
import { validationHook } from './errors.ts'
import type { Poller } from '../poller/poller.ts'
import type { RemoteClient } from '../../contracts/handshake-client.ts'

/** What the routes need, passed in so tests and the launcher wire real parts. */
export interface RouteDeps {
  store: StoreClient
  bus: Bus
  log: Logger
  instanceId: string
  remote: RemoteClient
  poller: Poller
  remoteAddress: RemoteAddress
  trustProxy: boolean
  /** Config `allowSelfUpstream`: an upstream may be this instance itself (tests, demos). */
  allowSelfUpstream?: boolean
}

/** A router whose zod failures answer 400 invalid_request (ARCHITECTURE.md §13). */
export const createRouter = () => new OpenAPIHono({ defaultHook: validationHook })

/** The operator, as the log records them: the API has one admin token, so no name, only the address. */
export function operatorActor(
  c: Context,
  deps: Pick<RouteDeps, 'remoteAddress' | 'trustProxy'>
): EventActor {
  return {
    kind: 'operator',
    ip: clientIp(c, { remote: deps.remoteAddress, trustProxy: deps.trustProxy }),
  }
}

export const BEARER = [{ bearerAuth: [] }]
