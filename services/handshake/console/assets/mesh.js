import { api, describeError } from './api.js'
import { debounce, fill, h } from './dom.js'

/**
 * Mesh: the instances and bridge links this instance knows of (GET /api/v1/mesh), drawn as an
 * SVG and listed in a table. A Blocked edge (held off the spanning tree to break a cycle) is
 * dashed and labelled "blocked", a down one dotted: colour is never the only sign.
 */
const NS = 'http://www.w3.org/2000/svg'
const POLL_MS = 3_000
const WIDTH = 720
const HEIGHT = 420
const R = 20 // node radius
const STATE_TEXT = {
  Active: 'Active: forwarding, on the spanning tree',
  Blocked: 'Blocked (dashed): held off the spanning tree to break a cycle',
  down: 'down (dotted): not forwarding',
}

/** An SVG element: attributes only (geometry and classes; the look is in console.css). */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  for (const c of children) el.append(c)
  return el
}

export function meshPage(el) {
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  const summary = h('p', { attrs: { 'data-field': 'summary' } })
  const figure = h('div', { className: 'mesh-figure' })
  const tbody = h('tbody')
  let shown = ''

  const load = async () => {
    try {
      const mesh = await api('GET', '/api/v1/mesh')
      alert.textContent = ''
      const text = JSON.stringify(mesh)
      if (text === shown) return // nothing moved: keep the drawing as it is
      shown = text
      fill(summary, summaryText(mesh))
      fill(figure, drawMesh(mesh))
      fill(tbody, mesh.edges.length ? mesh.edges.map(edgeRow) : emptyRow())
    } catch (err) {
      alert.textContent = describeError(err)
    }
  }
  const reload = debounce(load, 100)
  // Link states are not transitions: read them again every few seconds as well.
  const timer = setInterval(load, POLL_MS)

  fill(
    el,
    h('h1', { id: 'mesh-title' }, 'Mesh'),
    h(
      'p',
      { className: 'muted' },
      'Instances bridged with this one and the links between them, as the spanning tree sees ',
      'them. A link that would close a cycle is held Blocked, as MQTT-ST does.'
    ),
    alert,
    summary,
    figure,
    legend(),
    h(
      'table',
      { className: 'grid', attrs: { 'aria-label': 'Mesh links' } },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['From', 'To', 'Upstream', 'State', 'On spanning tree'].map((t) =>
            h('th', { attrs: { scope: 'col' } }, t)
          )
        )
      ),
      tbody
    )
  )
  load()
  return {
    onTransition(rec) {
      if (rec.machine === 'upstream' || rec.machine === 'request') reload()
    },
    destroy() {
      clearInterval(timer)
    },
  }
}

function summaryText(mesh) {
  const blocked = mesh.edges.filter((e) => e.state === 'Blocked').length
  const down = mesh.edges.filter((e) => e.state === 'down').length
  return (
    `${mesh.nodes.length} instance(s), ${mesh.edges.length} link(s): ` +
    `${blocked} blocked, ${down} down. This instance is ${mesh.instanceId}.`
  )
}

const emptyRow = () =>
  h('tr', {}, h('td', { colSpan: 5 }, 'No links yet: bridge an upstream to see the mesh.'))

function edgeRow(e) {
  return h(
    'tr',
    { attrs: { 'data-from': e.from, 'data-to': e.to } },
    h('td', {}, e.from),
    h('td', {}, e.to),
    h(
      'td',
      {},
      e.upstreamId
        ? h('a', { href: `#/machine/upstream/${encodeURIComponent(e.upstreamId)}` }, e.upstreamId)
        : '—'
    ),
    h(
      'td',
      { attrs: { 'data-field': 'state' } },
      h('span', { className: `badge edge-badge-${e.state.toLowerCase()}` }, e.state),
      e.state === 'Blocked' ? ' (blocked to break a cycle)' : ''
    ),
    h('td', {}, e.onTree ? 'yes' : 'no')
  )
}

/** Nodes on a circle, this instance at the top; edges end at the circles' rims. */
function drawMesh(mesh) {
  const cx = WIDTH / 2
  const cy = HEIGHT / 2
  const ring = Math.min(cx, cy) - 60
  const order = [...mesh.nodes.filter((n) => n.self), ...mesh.nodes.filter((n) => !n.self)]
  const at = new Map(
    order.map((n, i) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / order.length
      const r = order.length === 1 ? 0 : ring
      return [n.id, { x: cx + r * Math.cos(angle), y: cy + r * Math.sin(angle) }]
    })
  )
  const titleId = 'mesh-svg-title'
  const root = s('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: 'mesh',
    role: 'img',
    'aria-labelledby': titleId,
    'data-nodes': mesh.nodes.length,
  })
  root.append(s('title', { id: titleId }, `Mesh drawing: ${summaryText(mesh)}`), arrowDefs())
  for (const e of mesh.edges) root.append(edgeShape(e, at.get(e.from), at.get(e.to)))
  // Labels of the upper half go above their node, away from the edges leaving it downwards.
  for (const n of order) root.append(nodeShape(n, at.get(n.id), at.get(n.id).y < cy - 1))
  return root
}

function arrowDefs() {
  const marker = (id, cls) =>
    s(
      'marker',
      {
        id,
        viewBox: '0 0 10 10',
        refX: 9,
        refY: 5,
        markerWidth: 7,
        markerHeight: 7,
        orient: 'auto-start-reverse',
      },
      s('path', { d: 'M0,0 L10,5 L0,10 z', class: cls })
    )
  return s(
    'defs',
    {},
    marker('arrow-active', 'arrow arrow-active'),
    marker('arrow-blocked', 'arrow arrow-blocked'),
    marker('arrow-down', 'arrow arrow-down')
  )
}

function edgeShape(e, p, q) {
  const state = e.state.toLowerCase()
  const g = s('g', { class: `edge edge-${state}`, 'data-from': e.from, 'data-to': e.to })
  g.append(s('title', {}, `${e.from} → ${e.to}: ${e.state}${e.onTree ? ', on the tree' : ''}`))
  const dx = q.x - p.x
  const dy = q.y - p.y
  const len = Math.hypot(dx, dy) || 1
  const ux = dx / len
  const uy = dy / len
  const line = s('line', {
    x1: p.x + ux * R,
    y1: p.y + uy * R,
    x2: q.x - ux * (R + 2),
    y2: q.y - uy * (R + 2),
    'marker-end': `url(#arrow-${state})`,
  })
  if (e.both) line.setAttribute('marker-start', `url(#arrow-${state})`)
  g.append(line)
  if (e.state !== 'Active') {
    // The state in words on the edge itself, above its middle.
    const label = s('text', { x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 - 6, class: 'edge-label' })
    label.textContent = e.state === 'Blocked' ? 'blocked' : 'down'
    g.append(label)
  }
  return g
}

function nodeShape(n, p, above) {
  const g = s('g', { class: n.self ? 'node node-self' : 'node', 'data-node': n.id })
  g.append(s('title', {}, n.self ? `${n.id} (this instance)` : n.id))
  g.append(s('circle', { cx: p.x, cy: p.y, r: R }))
  const label = s('text', { x: p.x, y: above ? p.y - R - 8 : p.y + R + 16, class: 'node-label' })
  const name = n.id.length > 28 ? n.id.slice(0, 27) + '…' : n.id
  label.textContent = n.self ? `${name} (this)` : name
  g.append(label)
  return g
}

/** What each line style means, in words: dashed and dotted are not left to colour. */
function legend() {
  const sample = (state) =>
    s(
      'svg',
      {
        viewBox: '0 0 40 10',
        class: `legend-line edge edge-${state.toLowerCase()}`,
        'aria-hidden': 'true',
      },
      s('line', { x1: 0, y1: 5, x2: 40, y2: 5 })
    )
  return h(
    'ul',
    { className: 'plain legend', attrs: { 'aria-label': 'Legend' } },
    Object.entries(STATE_TEXT).map(([state, text]) => h('li', {}, sample(state), ' ', text))
  )
}
