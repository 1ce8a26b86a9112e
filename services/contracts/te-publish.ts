import { z } from 'zod'
import { requestJson, serveParsedJson } from '../common/bus/rpc.ts'
import type { Bus, Subscription } from '../common/bus/bus.ts'
import { UbError } from '../common/errors.ts'

/**
 * The HTTP entity API's writes (`POST/PATCH/PUT/DELETE /te/v1/entities…`) become the retained
 * MQTT messages an MQTT client would publish, as thin-edge's own HTTP API does: the handshake
 * process has no MQTT connection, so any gateway (queue group) publishes them through its
 * broker, where every subscriber, gateway and bridge link sees them and te-bus feeds the twin.
 */
export const TE_PUBLISH_SUBJECT = 'gateway.te-publish'
const QUEUE_GROUP = 'gateway'
/** Messages one request may carry: a whole twin replaced is at most twice the fragment bound. */
export const TE_PUBLISH_MAX_MESSAGES = 1_024
/** The gateway's code when its teRoot is empty: there is no thin-edge.io bus to publish on. */
export const TE_BUS_OFF = 'te_bus_off'

export const TeWriteSchema = z.object({
  /** Under the gateways' teRoot: `<topic id>` (registration) or `<topic id>/twin/<key>`. */
  topic: z.string().min(1).max(2_048),
  /** Published retained with QoS 1; empty clears (a deregistration on the entity topic). */
  payload: z.string().max(1_048_576),
})
export type TeWrite = z.infer<typeof TeWriteSchema>

const RequestSchema = z.object({
  messages: z.array(TeWriteSchema).min(1).max(TE_PUBLISH_MAX_MESSAGES),
})

/** Publishes in order; rejects with a UbError (`invalid_request` names the problem). */
export type TePublisher = (messages: TeWrite[]) => Promise<void>

export function serveTePublish(bus: Bus, publish: TePublisher): Promise<Subscription> {
  return serveParsedJson(
    bus,
    TE_PUBLISH_SUBJECT,
    RequestSchema,
    async ({ messages }) => {
      await publish(messages)
      return { published: messages.length }
    },
    { queue: QUEUE_GROUP }
  )
}

/** Resolves once a gateway published them and its twin feed's store calls for them settled. */
export async function requestTePublish(
  bus: Bus,
  messages: TeWrite[],
  timeoutMs = 15_000
): Promise<void> {
  await requestJson<{ published: number }>(bus, TE_PUBLISH_SUBJECT, { messages }, timeoutMs)
}
