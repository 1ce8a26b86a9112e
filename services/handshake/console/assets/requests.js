import { api, describeError } from './api.js'
import { badge, debounce, fill, h, when } from './dom.js'

/**
 * Incoming Requests (this instance as an upstream server): who asks (instance ID, source IP,
 * time), Accept with optional grants, Decline, Revoke. Rows are updated in place.
 */
export function requestsPage(el) {
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  const note = h('p', { className: 'note', attrs: { role: 'status' } })
  const tbody = h('tbody')
  const empty = h('p', { className: 'muted', hidden: true }, 'No requests yet.')
  const rows = new Map()

  const load = async () => {
    try {
      const list = await api('GET', '/api/v1/requests?limit=1000')
      for (const r of list) {
        let row = rows.get(r.id)
        if (!row) {
          row = makeRow(r, { alert, note, reload })
          rows.set(r.id, row)
          tbody.append(row.tr)
        }
        row.update(r)
      }
      empty.hidden = list.length > 0
    } catch (err) {
      alert.textContent = describeError(err)
    }
  }
  const reload = debounce(load, 100)

  fill(
    el,
    h('h1', { id: 'requests-title' }, 'Incoming Requests'),
    h(
      'p',
      { className: 'muted' },
      'Downstream instances asking to bridge into this one. Grants narrow what an accepted ',
      'downstream may publish and subscribe under (namespaces, comma separated; empty is everything).'
    ),
    alert,
    note,
    h(
      'table',
      { className: 'grid', attrs: { 'aria-labelledby': 'requests-title' } },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Instance ID', 'Source IP', 'Received', 'Status', 'Grants', 'Actions'].map((t) =>
            h('th', { attrs: { scope: 'col' } }, t)
          )
        )
      ),
      tbody
    ),
    empty
  )
  load()
  return {
    onTransition(rec) {
      if (rec.machine === 'request') reload()
    },
    destroy() {},
  }
}

function makeRow(first, { alert, note, reload }) {
  const id = first.id
  const path = `/api/v1/requests/${encodeURIComponent(id)}`
  const cells = {
    status: h('td', { attrs: { 'data-field': 'status' } }),
    grants: h('td', { attrs: { 'data-field': 'grants' } }),
    actions: h('td', { className: 'actions' }),
  }
  const grantsId = `grants-${id}`
  const grants = h('input', {
    id: grantsId,
    placeholder: 'grants (empty: all)',
    autocomplete: 'off',
  })
  const grantsLabel = h(
    'label',
    { className: 'sr-only', attrs: { for: grantsId } },
    `Grants for ${first.instanceId}`
  )
  const act = (verb, body) => async () => {
    alert.textContent = ''
    note.textContent = ''
    try {
      const r = await api('POST', `${path}/${verb}`, body)
      note.textContent = `${r.instanceId}: ${r.status}.`
    } catch (err) {
      alert.textContent = describeError(err)
    }
    reload()
  }
  const accept = () => {
    const list = grants.value
      .split(/[\s,]+/)
      .map((g) => g.trim())
      .filter(Boolean)
    return act('accept', list.length ? { grants: list } : {})()
  }
  const button = (text, fn, className) =>
    h('button', { type: 'button', className, on: { click: fn } }, text)
  const pending = [
    grantsLabel,
    grants,
    button('Accept', accept, 'primary'),
    button('Decline', act('decline'), 'danger'),
  ]
  const accepted = [button('Revoke', act('revoke'), 'danger')]
  const machine = h('a', { href: `#/machine/request/${encodeURIComponent(id)}` }, 'Machine view')
  const tr = h(
    'tr',
    { attrs: { 'data-id': id, 'data-instance': first.instanceId } },
    h('td', {}, first.instanceId),
    h('td', {}, first.sourceIp),
    h('td', {}, h('time', { dateTime: first.createdAt }, when(first.createdAt))),
    cells.status,
    cells.grants,
    cells.actions
  )
  let shown = null
  return {
    tr,
    update(r) {
      fill(cells.status, badge(r.status))
      fill(cells.grants, r.grants.length ? r.grants.join(', ') : '—')
      if (shown === r.status) return // keep the actions (and the focus) as they are
      shown = r.status
      const actions = r.status === 'Pending' ? pending : r.status === 'Accepted' ? accepted : []
      fill(cells.actions, h('span', { className: 'inline' }, actions), machine)
    },
  }
}
