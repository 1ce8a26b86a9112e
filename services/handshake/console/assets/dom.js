/**
 * A few DOM helpers. Elements are made with properties, never with HTML strings or inline
 * handlers, so the Content-Security-Policy needs no 'unsafe-inline'.
 */

/**
 * An element: `props` are properties (`className`, `type`, `value`, …), `attrs` attributes
 * (`aria-*`, `role`, `data-*`, `for`), `on` event listeners; children are nodes or text.
 */
export function h(tag, { attrs = {}, on = {}, ...props } = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value !== undefined) el[key] = value
  }
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== false) el.setAttribute(key, value === true ? '' : value)
  }
  for (const [event, handler] of Object.entries(on)) el.addEventListener(event, handler)
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    el.append(child instanceof Node ? child : String(child))
  }
  return el
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren()
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    el.append(child instanceof Node ? child : String(child))
  }
  return el
}

let nextId = 0
/** A unique element id for label/for pairs. */
export const uid = (prefix) => `${prefix}-${++nextId}`

/** A labelled input: `[label, input]`. */
export function field(label, props = {}) {
  const id = props.id ?? uid('f')
  const input = h(props.tag ?? 'input', { ...props, tag: undefined, id })
  return [h('label', { attrs: { for: id } }, label), input]
}

/** A labelled select with `options` (values, or [value, text] pairs). */
export function select(label, options, props = {}) {
  const id = props.id ?? uid('s')
  const el = h(
    'select',
    { ...props, id },
    options.map((o) =>
      Array.isArray(o) ? h('option', { value: o[0] }, o[1]) : h('option', { value: o }, o)
    )
  )
  if (props.value !== undefined) el.value = props.value
  return [h('label', { attrs: { for: id } }, label), el]
}

/** A status as a badge: the word, coloured by a class. */
export const badge = (status) =>
  h('span', { className: `badge badge-${String(status).toLowerCase()}` }, status)

/** A timestamp as local date and time. */
export function when(iso) {
  if (!iso) return ''
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString()
}

/** Call `fn` at most once per `ms`, after the last call. */
export function debounce(fn, ms) {
  let timer
  return (...args) => {
    clearTimeout(timer)
    timer = setTimeout(() => fn(...args), ms)
  }
}
