import type { z } from 'zod'
import { ValidationError } from '../errors.ts'
import {
  decodeJson,
  encodeJson,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type Bus,
  type Subscription,
} from './bus.ts'

/** JSON request/reply on top of the bus; errors come back as typed UbErrors with their code. */
export async function requestJson<T>(
  bus: Bus,
  subject: string,
  body: unknown,
  timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS
): Promise<T> {
  const reply = await bus.request(subject, encodeJson(body ?? {}), { timeoutMs })
  return decodeJson<T>(reply.data)
}

export function serveJson<I, O>(
  bus: Bus,
  subject: string,
  handler: (input: I) => Promise<O>,
  options: { queue?: string } = {}
): Promise<Subscription> {
  return bus.serve(
    subject,
    async (msg) => encodeJson(await handler(decodeJson<I>(msg.data))),
    options
  )
}

/** `serveJson` for requests `schema` must accept: anything else is answered `invalid_request`. */
export function serveParsedJson<S extends z.ZodType, O>(
  bus: Bus,
  subject: string,
  schema: S,
  handler: (input: z.output<S>) => Promise<O>,
  options: { queue?: string } = {}
): Promise<Subscription> {
  return serveJson(
    bus,
    subject,
    async (input: unknown) => {
      const parsed = schema.safeParse(input)
      if (!parsed.success) throw new ValidationError(parsed.error.message)
      return handler(parsed.data)
    },
    options
  )
}
