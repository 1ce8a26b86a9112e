import { api, describeError } from './api.js'
import { debounce, fill, h } from './dom.js'

/**
 * Route: the dry run of GET /api/v1/route for one concrete topic, as tables: where it goes out,
 * where it comes in from, and the instances it reaches now. `#/route/<topic>` opens with it.
 */
const COLUMNS = [
  'Upstream',
  'Host',
  'Binding',
  'Direction',
  'Resulting topic',
  'Link',
  'Tree path',
  'Closes cycle',
]

export function routePage(el, first) {
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  const input = h('input', {
    id: 'route-topic',
    name: 'topic',
    className: 'grow',
    required: true,
    autocomplete: 'off',
    placeholder: 'plant1/line3/press/temperature',
    value: first ?? '',
  })
  const result = h('div', { attrs: { 'data-field': 'route' } })
  let topic = first ?? ''

  const show = async () => {
    alert.textContent = ''
    if (!topic) return
    try {
      const plan = await api('GET', `/api/v1/route?topic=${encodeURIComponent(topic)}`)
      fill(result, planView(plan))
    } catch (err) {
      fill(result)
      alert.textContent = describeError(err)
    }
  }
  const reload = debounce(show, 100)

  const form = h(
    'form',
    { className: 'row', attrs: { 'aria-label': 'Route dry run' } },
    h('label', { attrs: { for: 'route-topic' } }, 'Topic'),
    input,
    h('button', { type: 'submit', className: 'primary' }, 'Show route')
  )
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    topic = input.value
    // The hash names the topic for a link or a reload; replaceState fires no hashchange, so the
    // page (and the focus) stays.
    history.replaceState(null, '', `#/route/${encodeURIComponent(topic)}`)
    show()
  })

  fill(
    el,
    h('h1', { id: 'route-title' }, 'Route'),
    h(
      'p',
      { className: 'muted' },
      'A dry run for one concrete topic (no + or #): the bindings it matches, the topic it ',
      'becomes on each upstream, each link’s state and its path on the spanning tree.'
    ),
    form,
    alert,
    result
  )
  show()
  return {
    onTransition(rec) {
      if (rec.machine === 'upstream') reload()
    },
    destroy() {},
  }
}

function planView(plan) {
  const reaches = plan.reaches.length
    ? h(
        'ul',
        { attrs: { 'data-field': 'reaches' } },
        plan.reaches.map((id) => h('li', {}, id))
      )
    : h('p', { className: 'muted', attrs: { 'data-field': 'reaches' } }, 'No instance now.')
  return [
    h('p', {}, `Topic ${plan.topic} on instance ${plan.instanceId}.`),
    h('h2', { id: 'route-out' }, 'Goes out'),
    hopTable(plan.out, 'route-out', 'out', 'No binding sends this topic out.'),
    h('h2', { id: 'route-in' }, 'Comes in'),
    hopTable(plan.in, 'route-in', 'in', 'No binding brings this topic in.'),
    h('h2', {}, 'Reaches'),
    reaches,
  ]
}

function hopTable(hops, titleId, kind, none) {
  return h(
    'table',
    { className: 'grid', attrs: { 'aria-labelledby': titleId, 'data-hops': kind } },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        COLUMNS.map((t) => h('th', { attrs: { scope: 'col' } }, t))
      )
    ),
    h(
      'tbody',
      {},
      hops.length ? hops.map(hopRow) : h('tr', {}, h('td', { colSpan: COLUMNS.length }, none))
    )
  )
}

function hopRow(hop) {
  const b = hop.binding
  return h(
    'tr',
    { attrs: { 'data-upstream': hop.upstreamId } },
    h(
      'td',
      {},
      h('a', { href: `#/machine/upstream/${encodeURIComponent(hop.upstreamId)}` }, hop.upstreamId)
    ),
    h('td', {}, hop.host),
    h('td', {}, `${b.source} → ${b.target}`),
    h('td', {}, hop.direction),
    h('td', { attrs: { 'data-field': 'topic' } }, hop.topic),
    h('td', { attrs: { 'data-field': 'link' } }, hop.link),
    h('td', {}, hop.treePath ? hop.treePath.join(' → ') : '—'),
    h('td', {}, hop.closesCycle ? 'yes: it would be held Blocked' : 'no')
  )
}
