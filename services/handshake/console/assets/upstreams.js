import { api, describeError } from './api.js'
import { openEditor } from './binding-editor.js'
import { createForm } from './create-form.js'
import { badge, debounce, fill, h } from './dom.js'

/**
 * Upstreams: the table (host, bindings, status, link health, the activate switch), the Create
 * Upstream form, and the editor of one upstream. Rows are updated in place, so a live update
 * never takes the keyboard focus away.
 */
const LINK_REFRESH_MS = 3_000 // link health is not a transition: read it again now and then
const SWITCHABLE = new Set(['Approved', 'Active'])

export function upstreamsPage(el) {
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  const tbody = h('tbody')
  const empty = h('p', { className: 'muted', hidden: true }, 'No upstreams yet.')
  const editorSlot = h('div')
  const rows = new Map()
  let editor = null

  // Two requests whatever the number of upstreams, and never two loads at once: a load that
  // outlasts the refresh period is not overtaken by the next (one more is run after it).
  let loading = null
  let again = false
  const loadOnce = async () => {
    try {
      const [list, links] = await Promise.all([
        api('GET', '/api/v1/upstreams?limit=1000'),
        api('GET', '/api/v1/links').catch(() => ({ items: {} })),
      ])
      list.forEach((u) => showRow(u, u.status === 'Deleted' ? null : (links.items[u.id] ?? null)))
      empty.hidden = list.length > 0
      editor?.update(list.find((u) => u.id === editor.id))
    } catch (err) {
      alert.textContent = describeError(err)
    }
  }
  const load = async () => {
    if (loading) {
      again = true
      return loading
    }
    loading = loadOnce().finally(() => {
      loading = null
      if (again) {
        again = false
        void load()
      }
    })
    return loading
  }
  const reload = debounce(load, 100)

  const showRow = (u, link) => {
    let row = rows.get(u.id)
    if (!row) {
      row = makeRow(u, { alert, reload, edit: (id) => edit(id) })
      rows.set(u.id, row)
      tbody.append(row.tr)
    }
    row.update(u, link)
  }

  const edit = async (id) => {
    alert.textContent = ''
    try {
      const up = await api('GET', `/api/v1/upstreams/${encodeURIComponent(id)}`)
      editor?.close()
      editor = openEditor(editorSlot, up, {
        onChange: reload,
        onClose: () => {
          editor = null
          rows.get(id)?.focusEdit()
        },
      })
    } catch (err) {
      alert.textContent = describeError(err)
    }
  }

  const table = h(
    'table',
    { className: 'grid', attrs: { 'aria-labelledby': 'upstreams-title' } },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Host', 'Namespace Binding', 'Status', 'Link health', 'Active', 'Actions'].map((t) =>
          h('th', { attrs: { scope: 'col' } }, t)
        )
      )
    ),
    tbody
  )
  fill(
    el,
    h('h1', { id: 'upstreams-title' }, 'Upstreams'),
    alert,
    table,
    empty,
    editorSlot,
    createForm(reload)
  )
  load()
  const timer = setInterval(load, LINK_REFRESH_MS)
  return {
    onTransition(rec) {
      if (rec.machine === 'upstream') reload()
    },
    destroy() {
      clearInterval(timer)
      editor?.close()
    },
  }
}

function bindingText(b) {
  return `${b.source} → ${b.target} (${b.direction ?? 'out'})`
}

/** A link's figures in one line: rate, lag, backlog and the age of its oldest unsent message. */
function linkFigures(link, perSecond) {
  const parts = []
  if (perSecond !== null) parts.push(`${perSecond.toFixed(perSecond < 10 ? 1 : 0)} msg/s`)
  if (typeof link.lagMs === 'number') parts.push(`lag ${link.lagMs} ms`)
  if (typeof link.backlog === 'number') parts.push(`backlog ${link.backlog}`)
  if (link.oldestUnsentAt) {
    const ageS = Math.max(0, Math.round((Date.now() - Date.parse(link.oldestUnsentAt)) / 1_000))
    parts.push(`oldest unsent ${ageS} s`)
  }
  return parts.join(' · ')
}

/** One row, made once and updated in place. */
function makeRow(first, { alert, reload, edit }) {
  const id = first.id
  // Forwarded per second, from two reads of the link's counter.
  let previous = null
  const rate = (link) => {
    if (typeof link.forwarded !== 'number') return null
    const now = Date.now()
    const before = previous
    previous = { forwarded: link.forwarded, at: now }
    if (!before || now - before.at < 500 || link.forwarded < before.forwarded) return null
    return ((link.forwarded - before.forwarded) * 1_000) / (now - before.at)
  }
  const cells = {
    host: h('td'),
    bindings: h('td', { attrs: { 'data-field': 'bindings' } }),
    status: h('td', { attrs: { 'data-field': 'status' } }),
    link: h('td', { attrs: { 'data-field': 'link' } }),
  }
  const switchId = `active-${id}`
  const toggle = h('input', {
    type: 'checkbox',
    id: switchId,
    attrs: { role: 'switch', 'aria-describedby': `host-${id}` },
  })
  const editButton = h('button', { type: 'button', on: { click: () => edit(id) } }, 'Edit Upstream')
  const tr = h(
    'tr',
    { attrs: { 'data-id': id } },
    cells.host,
    cells.bindings,
    cells.status,
    cells.link,
    h(
      'td',
      {},
      h('span', { className: 'switch' }, toggle, h('label', { attrs: { for: switchId } }, 'Active'))
    ),
    h(
      'td',
      { className: 'actions' },
      editButton,
      h('a', { href: `#/machine/upstream/${encodeURIComponent(id)}` }, 'Machine view')
    )
  )
  let busy = false
  toggle.addEventListener('change', async () => {
    const on = toggle.checked
    busy = true
    toggle.disabled = true
    alert.textContent = ''
    try {
      await api(
        'POST',
        `/api/v1/upstreams/${encodeURIComponent(id)}/${on ? 'activate' : 'deactivate'}`
      )
    } catch (err) {
      toggle.checked = !on
      alert.textContent = describeError(err)
    } finally {
      busy = false
      toggle.disabled = false
      reload()
    }
  })

  return {
    tr,
    focusEdit: () => editButton.focus(),
    update(u, link) {
      fill(
        cells.host,
        h('span', { id: `host-${id}` }, `${u.host}:${u.brokerPort}`),
        h('span', { className: 'muted' }, u.kind === 'mqtt' ? ' plain MQTT' : ` HTTP ${u.httpPort}`)
      )
      fill(
        cells.bindings,
        u.bindings.length === 0
          ? h('span', { className: 'muted' }, 'none')
          : h(
              'ul',
              { className: 'plain' },
              u.bindings.map((b) => h('li', {}, bindingText(b)))
            )
      )
      fill(cells.status, badge(u.status))
      const error = link?.lastError ?? u.lastError
      const figures = link ? linkFigures(link, rate(link)) : ''
      fill(
        cells.link,
        link?.state
          ? h('span', { className: 'link-state' }, link.state)
          : h('span', { className: 'muted' }, '—'),
        link?.silent
          ? h(
              'div',
              { className: 'error small', attrs: { 'data-field': 'silent' } },
              'silent: connected, but its canary has not come through'
            )
          : null,
        figures
          ? h('div', { className: 'small muted', attrs: { 'data-field': 'figures' } }, figures)
          : null,
        error ? h('div', { className: 'error small' }, error) : null
      )
      tr.classList.toggle('deleted', u.status === 'Deleted')
      editButton.hidden = u.status === 'Deleted'
      if (!busy) {
        toggle.checked = u.active
        toggle.disabled = !SWITCHABLE.has(u.status)
      }
    },
  }
}
