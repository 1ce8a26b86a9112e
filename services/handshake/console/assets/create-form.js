import { api, describeError } from './api.js'
import { field, h, select } from './dom.js'

/**
 * Create Upstream: what it connects to (another uns-bridge, asked over its handshake API, or a
 * plain MQTT broker with a user name and password), protocol and host, ports, TLS options (the
 * CA to trust, the server name, a client certificate and key); Request Connection sends it.
 */
const PROTOCOLS = ['mqtt://', 'mqtts://', 'ws://', 'wss://']
const KINDS = [
  ['uns', 'uns-bridge server (asks for a connection)'],
  ['mqtt', 'Plain MQTT broker (user name and password)'],
]

const portField = (label, id, value) =>
  field(label, { id, type: 'number', min: 1, max: 65535, value })

const pem = (label, id) => field(label, { id, tag: 'textarea', rows: 4 })

export function createForm(reload) {
  const [kindLabel, kind] = select('Upstream kind', KINDS, { id: 'create-kind' })
  const [protoLabel, proto] = select('Protocol', PROTOCOLS, { id: 'create-protocol' })
  const [hostLabel, host] = field('Broker Host', {
    id: 'create-host',
    required: true,
    placeholder: 'broker.example',
    autocomplete: 'off',
  })
  const [brokerLabel, brokerPort] = portField('Broker Port', 'create-broker-port', '1883')
  const [httpLabel, httpPort] = portField('HTTP Port', 'create-http-port', '8080')
  const [userLabel, username] = field('User name', { id: 'create-username', autocomplete: 'off' })
  const [passLabel, password] = field('Password', {
    id: 'create-password',
    type: 'password',
    autocomplete: 'new-password',
  })
  const [caLabel, ca] = pem('CA certificate (PEM)', 'create-ca')
  const [snLabel, servername] = field('TLS server name', { id: 'create-servername' })
  const [certLabel, cert] = pem('Client certificate (PEM)', 'create-cert')
  const [keyLabel, key] = pem('Client private key (PEM)', 'create-key')
  const alert = h('p', { className: 'error', attrs: { role: 'alert' } })
  const note = h('p', { className: 'note', attrs: { role: 'status' } })
  const httpBox = h('div', {}, httpLabel, httpPort)
  const credentials = h(
    'div',
    { className: 'row', hidden: true },
    h('div', {}, userLabel, username),
    h('div', {}, passLabel, password)
  )
  // A plain broker has no handshake API (no HTTP port) and takes a user name and password.
  const showKind = () => {
    const plain = kind.value === 'mqtt'
    httpBox.hidden = plain
    credentials.hidden = !plain
  }
  kind.addEventListener('change', showKind)

  const form = h(
    'form',
    { attrs: { 'aria-labelledby': 'create-title' } },
    h('div', { className: 'row' }, h('div', {}, kindLabel, kind)),
    h(
      'div',
      { className: 'row' },
      h('div', {}, protoLabel, proto),
      h('div', { className: 'grow' }, hostLabel, host)
    ),
    h('div', { className: 'row' }, h('div', {}, brokerLabel, brokerPort), httpBox),
    credentials,
    h(
      'details',
      {},
      h('summary', {}, 'TLS options'),
      h(
        'div',
        { className: 'stack' },
        caLabel,
        ca,
        snLabel,
        servername,
        certLabel,
        cert,
        keyLabel,
        key
      )
    ),
    h('button', { type: 'submit' }, 'Request Connection'),
    alert,
    note
  )
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    alert.textContent = ''
    note.textContent = ''
    try {
      const up = await api('POST', '/api/v1/upstreams', bodyOf())
      note.textContent = `Requested ${up.host}:${up.brokerPort}: ${up.status}.`
      host.value = ''
      password.value = ''
      key.value = ''
      reload()
    } catch (err) {
      alert.textContent = describeError(err)
    }
  })

  function bodyOf() {
    const name = host.value.trim()
    const tls = {}
    if (ca.value.trim()) tls.ca = ca.value
    if (servername.value.trim()) tls.servername = servername.value.trim()
    if (cert.value.trim()) tls.cert = cert.value
    if (key.value.trim()) tls.key = key.value
    const common = {
      host: name.includes('://') ? name : proto.value + name,
      brokerPort: Number(brokerPort.value),
      ...(Object.keys(tls).length ? { tls } : {}),
    }
    if (kind.value !== 'mqtt') return { ...common, httpPort: Number(httpPort.value) }
    return {
      kind: 'mqtt',
      ...common,
      ...(username.value.trim() ? { username: username.value.trim() } : {}),
      ...(password.value ? { password: password.value } : {}),
    }
  }

  return h(
    'section',
    { className: 'panel', attrs: { 'aria-labelledby': 'create-title' } },
    h('h2', { id: 'create-title' }, 'Create Upstream'),
    form
  )
}
