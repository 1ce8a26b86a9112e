import type { Context } from 'hono'

/**
 * A list page answered as a bare JSON array (what clients of the unpaged list already read),
 * with the next page's cursor in `X-Next-Cursor` and a `Link: <…>; rel="next"` header.
 */
export function pagedJson<T>(c: Context, page: { items: T[]; next: string | null }) {
  if (page.next !== null) {
    const url = new URL(c.req.url)
    url.searchParams.set('cursor', page.next)
    c.header('X-Next-Cursor', page.next)
    c.header('Link', `<${url.pathname}${url.search}>; rel="next"`)
  }
  return c.json(page.items, 200)
}

/** The store input for one page, without the query's absent keys. */
export function pageInput(q: {
  status?: string | undefined
  limit?: number | undefined
  cursor?: string | undefined
  instanceId?: string | undefined
}) {
  return Object.fromEntries(Object.entries(q).filter(([, v]) => v !== undefined)) as typeof q
}
