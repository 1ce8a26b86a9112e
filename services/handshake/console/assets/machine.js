import { api, describeError } from './api.js'
import { badge, debounce, fill, h, when } from './dom.js'

/**
 * The machine view of one upstream or request: its current state, its transition log (paged,
 * each row's hash check) and a replay to a chosen sequence with the chain's verification.
 */
const PAGE = 20
const BASES = { upstream: '/api/v1/upstreams', request: '/api/v1/requests' }

export function machinePage(el, machine, id) {
  const base = BASES[machine]
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  if (!base || !id) {
    fill(el, h('h1', {}, 'Machine view'), alert)
    alert.textContent = 'No such machine: pick an upstream or a request from its list.'
    return { destroy() {} }
  }
  const path = `${base}/${encodeURIComponent(id)}`
  const state = h('p', { attrs: { 'data-field': 'state' } })
  const tbody = h('tbody')
  const pager = h('div', { className: 'buttons' })
  const replayResult = h('div', { attrs: { role: 'status', 'data-field': 'replay' } })
  const seq = h('input', { id: 'replay-to', type: 'number', min: 1, value: '1' })
  const afters = [0] // the `after` of each page shown so far: back is the one before
  let page = 0

  const showState = (r) => {
    fill(state, 'Current state: ', badge(r.state), ` at seq ${r.to}; `, verifyText(r.verify))
    seq.max = String(r.to)
  }
  const showLog = (log) => {
    fill(tbody, log.items.map(logRow))
    if (log.items.length === 0) fill(tbody, h('tr', {}, h('td', { colSpan: 7 }, 'No transitions.')))
    const back = h('button', { type: 'button', disabled: page === 0 }, 'Previous page')
    const next = h('button', { type: 'button', disabled: log.next === null }, 'Next page')
    back.addEventListener('click', () => {
      page = Math.max(0, page - 1)
      refresh()
    })
    next.addEventListener('click', () => {
      afters[page + 1] = log.next
      page += 1
      refresh()
    })
    fill(pager, back, next, h('span', { className: 'muted' }, ` page ${page + 1}`))
  }
  // Both are fetched before either is drawn, so the state line never describes a log not yet shown.
  const refresh = async () => {
    try {
      const [r, log] = await Promise.all([
        api('GET', `${path}/replay`),
        api('GET', `${path}/transitions?after=${afters[page]}&limit=${PAGE}`),
      ])
      showState(r)
      showLog(log)
    } catch (err) {
      alert.textContent = describeError(err)
    }
  }
  const reload = debounce(refresh, 100)

  const replayForm = h(
    'form',
    { className: 'row' },
    h('label', { attrs: { for: 'replay-to' } }, 'Replay to sequence'),
    seq,
    h('button', { type: 'submit' }, 'Replay')
  )
  replayForm.addEventListener('submit', async (e) => {
    e.preventDefault()
    alert.textContent = ''
    try {
      const r = await api('GET', `${path}/replay?to=${encodeURIComponent(seq.value)}`)
      fill(
        replayResult,
        h('p', {}, `State at seq ${r.to}: `, badge(r.state)),
        h('p', { className: r.verify.ok ? 'ok' : 'error' }, verifyText(r.verify)),
        h(
          'pre',
          { className: 'snapshot' },
          JSON.stringify(r.snapshot.context ?? r.snapshot, null, 2)
        )
      )
    } catch (err) {
      alert.textContent = describeError(err)
    }
  })

  const back = machine === 'upstream' ? '#/upstreams' : '#/requests'
  fill(
    el,
    h(
      'p',
      {},
      h('a', { href: back }, machine === 'upstream' ? '← Upstreams' : '← Incoming Requests')
    ),
    h('h1', { id: 'machine-title' }, `Machine view: ${machine} ${id}`),
    alert,
    state,
    h('h2', {}, 'Transition log'),
    h(
      'table',
      { className: 'grid', attrs: { 'aria-label': 'Transition log' } },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Seq', 'Time', 'Event', 'From', 'To', 'Actor', 'Hash check'].map((t) =>
            h('th', { attrs: { scope: 'col' } }, t)
          )
        )
      ),
      tbody
    ),
    pager,
    h('h2', {}, 'Replay'),
    replayForm,
    replayResult
  )
  refresh()
  return {
    onTransition(rec) {
      if (rec.machine === machine && rec.machineId === id) reload()
    },
    destroy() {},
  }
}

function verifyText(v) {
  if (v.ok) return `chain verified (${v.rows} rows)`
  return `chain broken at seq ${v.firstBadSeq ?? '?'}: ${v.problem ?? ''} ${v.message ?? ''}`.trim()
}

function actorText(a) {
  if (!a) return ''
  return [a.kind, a.ip ?? a.name ?? a.id].filter(Boolean).join(' ')
}

function logRow(t) {
  return h(
    'tr',
    { attrs: { 'data-seq': String(t.seq) } },
    h('td', {}, String(t.seq)),
    h('td', {}, h('time', { dateTime: t.at }, when(t.at))),
    h('td', {}, t.event?.type ?? ''),
    h('td', {}, t.from ?? '—'),
    h('td', {}, t.to),
    h('td', {}, actorText(t.actor)),
    h(
      'td',
      { className: t.verified === false ? 'error' : 'ok' },
      t.verified === false ? `broken: ${t.problem ?? ''}` : 'ok'
    )
  )
}
