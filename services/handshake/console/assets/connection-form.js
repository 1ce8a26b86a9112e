import { api } from './api.js'
import { field, h, select } from './dom.js'

/**
 * Edit Upstream → Connection: the fields of Create Upstream, filled with the upstream's own;
 * Save Connection sends only what changed (PATCH), so an unchanged private key is never resent.
 * Another host or HTTP port asks that server again (README, Edit an upstream).
 */
const PROTOCOLS = ['mqtt://', 'mqtts://', 'ws://', 'wss://']

/** `mqtts://broker.example` → ['mqtts://', 'broker.example']. */
function splitHost(host) {
  const at = host.indexOf('://')
  return at < 0 ? ['mqtt://', host] : [host.slice(0, at + 3), host.slice(at + 3)]
}

/**
 * The Connection fieldset of one upstream. `run(describe, fn)` is the editor's: it clears the
 * alert, calls `fn` and shows `describe(result)`, or the error in the page's alert.
 */
export function connectionForm(upstream, run) {
  const key = upstream.id
  const tls = upstream.tls ?? {}
  const [protocol, name] = splitHost(upstream.host)
  const [protoLabel, proto] = select('Protocol', PROTOCOLS, {
    id: `conn-protocol-${key}`,
    value: protocol,
  })
  const [hostLabel, host] = field('Broker Host', {
    id: `conn-host-${key}`,
    required: true,
    autocomplete: 'off',
    value: name,
  })
  const port = (label, id, value) =>
    field(label, { id, type: 'number', min: 1, max: 65535, required: true, value: String(value) })
  const [brokerLabel, brokerPort] = port(
    'Broker Port',
    `conn-broker-port-${key}`,
    upstream.brokerPort
  )
  const [httpLabel, httpPort] = port('HTTP Port', `conn-http-port-${key}`, upstream.httpPort)
  const [caLabel, ca] = field('CA certificate (PEM)', {
    id: `conn-ca-${key}`,
    tag: 'textarea',
    rows: 4,
    value: tls.ca ?? '',
  })
  const [snLabel, servername] = field('TLS server name', {
    id: `conn-servername-${key}`,
    value: tls.servername ?? '',
  })
  const plainBroker = upstream.kind === 'mqtt'

  /** The PATCH body: each field that differs from the upstream; null removes a TLS field. */
  const changes = () => {
    const given = host.value.trim()
    const body = {}
    const full = given.includes('://') ? given : proto.value + given
    if (full !== upstream.host) body.host = full
    if (Number(brokerPort.value) !== upstream.brokerPort) body.brokerPort = Number(brokerPort.value)
    if (!plainBroker && Number(httpPort.value) !== upstream.httpPort)
      body.httpPort = Number(httpPort.value)
    const tlsPatch = {}
    const text = (value) => (value.trim() ? value : null)
    if (text(ca.value) !== (tls.ca ?? null)) tlsPatch.ca = text(ca.value)
    const sn = servername.value.trim() || null
    if (sn !== (tls.servername ?? null)) tlsPatch.servername = sn
    if (Object.keys(tlsPatch).length) body.tls = tlsPatch
    return body
  }

  const form = h(
    'form',
    { attrs: { 'aria-labelledby': `conn-legend-${key}` } },
    h(
      'fieldset',
      {},
      h('legend', { id: `conn-legend-${key}` }, 'Connection'),
      h(
        'div',
        { className: 'row' },
        h('div', {}, protoLabel, proto),
        h('div', { className: 'grow' }, hostLabel, host)
      ),
      h(
        'div',
        { className: 'row' },
        h('div', {}, brokerLabel, brokerPort),
        plainBroker ? null : h('div', {}, httpLabel, httpPort)
      ),
      h(
        'details',
        { open: Boolean(upstream.tls) },
        h('summary', {}, 'TLS options'),
        h('div', { className: 'stack' }, caLabel, ca, snLabel, servername)
      ),
      h('div', { className: 'buttons' }, h('button', { type: 'submit' }, 'Save Connection'))
    )
  )
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const body = changes()
    if (Object.keys(body).length === 0) {
      run(
        () => 'Nothing to save: the connection is as it was.',
        async () => null
      )
      return
    }
    run(
      (up) => {
        Object.assign(upstream, up) // what changed is measured against the saved connection
        return `Connection saved: ${up.host}:${up.brokerPort}, ${up.status}.`
      },
      () => api('PATCH', `/api/v1/upstreams/${encodeURIComponent(key)}`, body)
    )
  })
  return form
}
