import { z } from 'zod'

/** The value shapes config keys share: a port, a boolean that env and flags give as text. */
export const port = z.coerce.number().int().min(0).max(65_535)
export const bool = z.union([
  z.boolean(),
  z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1'),
])
export const optionalString = z.string().min(1).optional()
