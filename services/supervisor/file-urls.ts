/**
 * A te/ command coming down a link names its file by a `tedgeUrl` into the upstream's file
 * service, which a device on the edge cannot reach (or should not: a hundred devices would each
 * fetch it over the WAN). Coming in, that URL is rewritten to this instance's own file service at
 * the path the binding maps it to, as a topic would be (`acme/site1/fw.bin` → `site1/fw.bin`);
 * there the file service fetches the file once from the upstream (services/files/pull-through.ts).
 */
import { fileUrlPath, isPathProblem, parseFilePath } from '../files/file-path.ts'

const TEDGE_URL = Buffer.from('"tedgeUrl"')

export interface FileUrlRewriter {
  /** The payload of a message on local topic `topic`, its tedgeUrl rewritten when it names a file that comes down a binding. */
  inbound(topic: string, payload: Buffer): Buffer
}

export function createFileUrlRewriter({
  teRoot,
  localFilesUrl,
  toLocal,
}: {
  /** The local thin-edge root (`te`); empty = no rewriting. */
  teRoot: string
  /** This instance's HTTP base as its devices reach it; undefined while unknown. */
  localFilesUrl: () => string | undefined
  /** The local name of an upstream topic (or file path), null when no binding brings it in. */
  toLocal: (topic: string) => string | null
}): FileUrlRewriter {
  const prefix = `${teRoot}/`
  return {
    inbound(topic, payload) {
      // Cheap tests first: most messages are not te/ commands.
      if (!teRoot || !topic.startsWith(prefix) || !isCommand(topic, teRoot)) return payload
      if (!payload.includes(TEDGE_URL)) return payload
      const base = localFilesUrl()
      if (base === undefined) return payload
      let body: Record<string, unknown>
      try {
        body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
      } catch {
        return payload
      }
      const rewritten = rewriteUrl(body.tedgeUrl, base, toLocal)
      if (rewritten === null) return payload
      return Buffer.from(JSON.stringify({ ...body, tedgeUrl: rewritten }))
    },
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
  toLocal: (topic: string) => string | null
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
  const local = toLocal(name)
  return local === null ? null : base.replace(/\/$/, '') + fileUrlPath(local) + url.search
}
