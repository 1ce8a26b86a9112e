import { z } from 'zod'

const positive = (description: string, fallback: number) =>
  z.coerce.number().int().min(1).default(fallback).describe(description)
const ms = (description: string, fallback: number) =>
  z.coerce.number().int().min(0).default(fallback).describe(description)

/** The file transfer service's keys (`/te/v1/files`; README, File transfer). */
export const filesKeys = {
  filesUrl: z
    .string()
    .url()
    .optional()
    .describe(
      "this instance's HTTP base as its devices reach it (http://192.168.1.10:8080): a te/ command's tedgeUrl coming down a bridge is rewritten to it; default the HTTP listener when the handshake runs in the same process"
    ),
  filesMaxFileBytes: positive(
    'largest file one PUT may store, in bytes (1 GiB); more gets 413',
    1 << 30
  ),
  filesMaxTotalBytes: positive(
    'bytes all stored files may take together (8 GiB); a PUT past it gets 507',
    8 * 2 ** 30
  ),
  filesMaxCount: positive(
    'files stored at most (100,000); a PUT of a new one past it gets 507',
    100_000
  ),
  filesQuotas: z
    .union([z.string(), z.record(z.string(), z.number().int().min(0))])
    .transform((v, ctx) => {
      if (typeof v !== 'string') return v
      try {
        return z.record(z.string(), z.number().int().min(0)).parse(JSON.parse(v))
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be a JSON object {"namespace": bytes}' })
        return z.NEVER
      }
    })
    .default({})
    .describe(
      'bytes the files under a namespace may take, e.g. {"acme/site1": 1073741824}; the longest namespace containing a path applies; past it a PUT gets 507'
    ),
  filesTtlMs: ms(
    'ms a file is kept when its PUT names no other (7 days); 0 = until deleted',
    604_800_000
  ),
  filesMaxTtlMs: ms(
    'longest keep a PUT may ask for with the Ub-Ttl header (30 days); 0 = no bound',
    2_592_000_000
  ),
  filesCommandCleanupMs: ms(
    'ms after a te/ command ends (successful or failed) that the file its tedgeUrl names is removed (5 min); 0 = never',
    300_000
  ),
  filesSweepMs: ms('ms between sweeps for expired files (1 min)', 60_000),
  filesUsageRefreshMs: ms(
    "ms between re-counts of the stored bytes, which sees other replicas' writes (30 s)",
    30_000
  ),
}
