import { z } from '@hono/zod-openapi'
import { BEARER, type createRouter } from '../deps.ts'
import { errorResponses, json } from '../schemas.ts'
import { KeyParam, TeEntity, TopicIdParam } from './te-entities.ts'

/**
 * The OpenAPI description of the entity API's writes (te-entity-writes.ts): they take the topic
 * id as the rest of the path, so hono serves them by hand and they are described here.
 */
const tags = ['thin-edge.io']

export const TeEntityWritten = z.object({
  '@topic-id': z.string().openapi({ example: 'device/child01//' }),
})

const EntityUpdate = z
  .object({
    '@parent': z.string().optional().openapi({ example: 'device/child0//' }),
    '@health': z.string().optional().openapi({ example: 'device/child01/service/tedge-agent' }),
  })
  .openapi('TeEntityUpdate')

const Fragments = z.record(z.string(), z.unknown())
const body = (schema: z.ZodType, description: string) => ({
  content: { 'application/json': { schema } },
  description,
  required: true,
})
const noContent = (description: string) => ({ 204: { description } })

export function describeWriteRoutes(app: ReturnType<typeof createRouter>): void {
  const doc = (
    method: 'patch' | 'put' | 'delete',
    path: string,
    summary: string,
    request: { params: z.ZodObject; body?: ReturnType<typeof body> },
    responses: Record<number, unknown>,
    errors: number[]
  ) =>
    app.openAPIRegistry.registerPath({
      method,
      path,
      tags,
      security: BEARER,
      summary,
      request,
      responses: { ...responses, ...errorResponses(...errors, 401, 503) } as never,
    })
  const entity = '/te/v1/entities/{topic-id}'
  doc(
    'patch',
    entity,
    "Change an entity's @parent (a registered device) or @health (a registered service): " +
      'republishes its retained registration',
    { params: TopicIdParam, body: body(EntityUpdate, '@parent and/or @health only') },
    { 200: json(TeEntity, 'the entity updated') },
    [400, 404]
  )
  doc(
    'delete',
    entity,
    'Deregister an entity and its descendants: an empty retained registration, which also ' +
      'clears every retained message under them',
    { params: TopicIdParam },
    { 200: json(z.array(TeEntity), 'the entities removed'), ...noContent('none was registered') },
    [400]
  )
  doc(
    'put',
    `${entity}/twin`,
    'Replace the twin: each fragment as its retained twin/<key> message; fragments left out or ' +
      'null are cleared',
    { params: TopicIdParam, body: body(Fragments, 'fragments by key') },
    { 200: json(Fragments, 'the twin written') },
    [400, 404]
  )
  doc(
    'delete',
    `${entity}/twin`,
    'Clear every twin fragment (empty retained twin/<key> messages)',
    { params: TopicIdParam },
    noContent('cleared'),
    [400, 404]
  )
  doc(
    'put',
    `${entity}/twin/{key}`,
    'Set one twin fragment: its retained twin/<key> message (null clears it)',
    { params: KeyParam, body: body(z.unknown(), 'any JSON value') },
    { 200: json(z.unknown(), 'the value written') },
    [400, 404]
  )
  doc(
    'delete',
    `${entity}/twin/{key}`,
    'Clear one twin fragment (an empty retained twin/<key> message), whether it was set or not',
    { params: KeyParam },
    noContent('cleared'),
    [400, 404]
  )
}
