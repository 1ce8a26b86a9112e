/**
 * A te/ command coming down a link names its file by a `tedgeUrl` into the upstream's file
 * service, which a device on the edge cannot reach (or should not: a hundred devices would each
 * fetch it over the WAN). Coming in, that URL is rewritten to this instance's own file service at
 * the path the binding maps it to, as a topic would be (`acme/site1/fw.bin` → `site1/fw.bin`);
 * there the file service fetches the file once from the upstream (services/files/pull-through.ts).
 * Going up, a tedgeUrl into this instance's file service (a configuration snapshot a device
 * uploaded here) is rewritten to the upstream's, where services/files/push-up.ts copies the file.
 */
import { fileUrlPath, isPathProblem, parseFilePath } from '../contracts/file-paths.ts'

const TEDGE_URL = Buffer.from('"tedgeUrl"')

export interface FileUrlRewriter {
  /** The payload of a message on local topic `topic`, its tedgeUrl rewritten when it names a file that comes down a binding. */
  inbound(topic: string, payload: Buffer): Buffer
  /**
   * The payload of a local message on `topic` going up, its tedgeUrl rewritten to the upstream's
   * file service when it names a file a binding going out maps there (services/files/push-up.ts
   * copies the file).
   */
  outbound(topic: string, payload: Buffer): Buffer
}

export function createFileUrlRewriter({
  teRoot,
  localFilesUrl,
  toLocal,
  upstreamFilesUrl,
  toUpstream,
}: {
  /** The local thin-edge root (`te`); empty = no rewriting. */
  teRoot: string
  /** This instance's HTTP base as its devices reach it; undefined while unknown. */
  localFilesUrl: () => string | undefined
  /** The local name of an upstream topic (or file path), null when no binding brings it in. */
  toLocal: (topic: string) => string | null
  /** The upstream's HTTP base as this instance reaches it; undefined = no rewriting going up. */
  upstreamFilesUrl?: string
  /** The upstream name of a local topic (or file path), null when no binding takes it out. */
  toUpstream?: (topic: string) => string | null
}): FileUrlRewriter {
  const prefix = `${teRoot}/`
  /** The command's JSON body when `payload` on local `topic` is a te/ command naming a tedgeUrl. */
  const commandOf = (topic: string, payload: Buffer): Record<string, unknown> | null => {
    // Cheap tests first: most messages are not te/ commands.
    if (!teRoot || !topic.startsWith(prefix) || !isCommand(topic, teRoot)) return null
    if (!payload.includes(TEDGE_URL)) return null
    try {
      return JSON.parse(payload.toString('utf8')) as Record<string, unknown>
    } catch {
      return null
    }
  }
  const rewritten = (
    topic: string,
    payload: Buffer,
    base: string | undefined,
    map: ((name: string) => string | null) | undefined
  ): Buffer => {
    if (base === undefined || !map) return payload
    const body = commandOf(topic, payload)
    const url = body && rewriteUrl(body.tedgeUrl, base, map)
    return url ? Buffer.from(JSON.stringify({ ...body, tedgeUrl: url })) : payload
  }
  return {
    inbound: (topic, payload) => rewritten(topic, payload, localFilesUrl(), toLocal),
    outbound: (topic, payload) => rewritten(topic, payload, upstreamFilesUrl, toUpstream),
  }
}

/** `<root>/<4 ids>/cmd/<operation>/<id>` */
function isCommand(topic: string, teRoot: string): boolean {
  const levels = topic.split('/')
  const root = teRoot.split('/').length
  return levels.length === root + 7 && levels[root + 4] === 'cmd'
}

function rewriteUrl(
  tedgeUrl: unknown,
  base: string,
  map: (name: string) => string | null
): string | null {
  if (typeof tedgeUrl !== 'string') return null
  let url: URL
  try {
    url = new URL(tedgeUrl)
  } catch {
    return null
  }
  // The upstream may name itself differently from how we reach it (a public name, a proxy):
  // the path says it is a file service's, the binding says whether it comes down to us.
  const name = parseFilePath(url.pathname)
  if (isPathProblem(name)) return null
  const mapped = map(name)
  return mapped === null ? null : base.replace(/\/$/, '') + fileUrlPath(mapped) + url.search
}
