import { api, describeError } from './api.js'
import { connectionForm } from './connection-form.js'
import { badge, fill, h } from './dom.js'

/**
 * Edit Upstream: the Connection form (Save Connection), the Upstream Binding editor (source
 * namespace → target namespace, direction; Add Binding, Update), Refresh Connection, Ask again
 * after a decline, Delete Upstream.
 */
const DIRECTIONS = [
  ['out', 'out: local → upstream'],
  ['in', 'in: upstream → local'],
  ['both', 'both'],
]

/** The Upstream Binding fieldset: one row per binding; `read()` the rows as the API takes them. */
function bindingTable(initial) {
  const tbody = h('tbody')
  let rowCount = 0
  const addRow = (b = { source: '', target: '', direction: 'out' }) => {
    const n = ++rowCount
    const source = h('input', { value: b.source, id: `bind-source-${n}`, autocomplete: 'off' })
    const target = h('input', { value: b.target, id: `bind-target-${n}`, autocomplete: 'off' })
    const direction = h(
      'select',
      { id: `bind-direction-${n}` },
      DIRECTIONS.map(([v, t]) => h('option', { value: v }, t))
    )
    direction.value = b.direction ?? 'out'
    const label = (forId, text) => h('label', { className: 'sr-only', attrs: { for: forId } }, text)
    const tr = h(
      'tr',
      {},
      h('td', {}, label(source.id, `Source namespace ${n}`), source),
      h('td', { attrs: { 'aria-hidden': 'true' } }, '→'),
      h('td', {}, label(target.id, `Target namespace ${n}`), target),
      h('td', {}, label(direction.id, `Direction ${n}`), direction),
      h(
        'td',
        {},
        h('button', { type: 'button', on: { click: () => tr.remove() } }, `Remove binding ${n}`)
      )
    )
    tr.bindingInputs = { source, target, direction }
    tbody.append(tr)
    return source
  }
  for (const b of initial) addRow(b)
  const table = h(
    'table',
    { className: 'grid bindings' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ['Source namespace', '', 'Target namespace', 'Direction', ''].map((t) =>
          h('th', { attrs: { scope: 'col' } }, t)
        )
      )
    ),
    tbody
  )
  const read = () =>
    [...tbody.children]
      .map((tr) => tr.bindingInputs)
      .map((i) => ({
        source: i.source.value.trim(),
        target: i.target.value.trim(),
        direction: i.direction.value,
      }))
      .filter((b) => b.source || b.target)
  return { table, addRow, read }
}

export function openEditor(slot, upstream, { onChange, onClose }) {
  const id = upstream.id
  const path = `/api/v1/upstreams/${encodeURIComponent(id)}`
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  const note = h('p', { className: 'note', attrs: { role: 'status' } })
  const status = h('span')
  const heading = h('span')
  const askAgain = h('button', { type: 'button' }, 'Ask Again')
  const bindings = bindingTable(upstream.bindings)

  const run = async (what, fn) => {
    alert.textContent = ''
    note.textContent = ''
    try {
      const result = await fn()
      note.textContent = what(result)
      onChange()
    } catch (err) {
      alert.textContent = describeError(err)
    }
  }

  const update = () =>
    run(
      (up) => `Bindings updated: ${up.bindings.length} binding(s).`,
      () => api('PUT', `${path}/bindings`, bindings.read())
    )
  const refresh = () =>
    run(
      (up) => `Refreshed: ${up.status}.`,
      () => api('POST', `${path}/refresh`)
    )
  const remove = () =>
    run(
      (up) =>
        up.withdrawal?.ok === false
          ? `Deleted; the withdrawal is pending: ${up.withdrawal.error}`
          : 'Deleted; the request was withdrawn.',
      () => api('DELETE', path)
    )
  askAgain.addEventListener('click', () =>
    run(
      (up) => `Asked again: ${up.status}.`,
      () => api('POST', `${path}/request`)
    )
  )

  const close = () => {
    fill(slot)
    onClose()
  }
  const show = (up) => {
    if (!up) return
    fill(heading, `${up.host}:${up.brokerPort}`)
    fill(
      status,
      badge(up.status),
      up.lastError ? h('span', { className: 'error small' }, ` ${up.lastError}`) : null
    )
    askAgain.hidden = !(up.status === 'Declined' || up.status === 'Revoked')
  }

  show(upstream)
  const title = `edit-title-${id}`
  fill(
    slot,
    h(
      'section',
      { className: 'panel', attrs: { 'aria-labelledby': title } },
      h('h2', { id: title, tabIndex: -1 }, 'Edit Upstream ', heading),
      h('p', {}, 'Status: ', status),
      connectionForm(upstream, run),
      h(
        'fieldset',
        {},
        h('legend', {}, 'Upstream Binding'),
        bindings.table,
        h(
          'div',
          { className: 'buttons' },
          h(
            'button',
            { type: 'button', on: { click: () => bindings.addRow().focus() } },
            'Add Binding'
          ),
          h('button', { type: 'button', className: 'primary', on: { click: update } }, 'Update')
        )
      ),
      h(
        'div',
        { className: 'buttons' },
        h('button', { type: 'button', on: { click: refresh } }, 'Refresh Connection'),
        askAgain,
        h(
          'button',
          { type: 'button', className: 'danger', on: { click: remove } },
          'Delete Upstream'
        ),
        h('button', { type: 'button', on: { click: close } }, 'Close')
      ),
      alert,
      note
    )
  )
  document.getElementById(title)?.focus()
  return {
    id,
    update: show,
    close: () => fill(slot),
  }
}
