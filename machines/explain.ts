import { isWithinAny } from './namespace.ts'
import type { Binding } from './upstream.ts'

/** Why the Upstream machine refused an event, in words an operator can act on. */
export function explainUpstreamRefusal(
  state: string,
  context: Record<string, unknown>,
  event: { type: string }
): string {
  const bindings = (context.bindings as Binding[] | undefined) ?? []
  const grants = (context.grants as string[] | undefined) ?? []
  switch (event.type) {
    case 'upstream.activate':
      if (state === 'Approved' && bindings.length === 0)
        return 'activate needs at least one binding'
      if (state === 'Approved') {
        const outside = bindings.filter((b) => !isWithinAny(b.target, grants)).map((b) => b.target)
        return `activate refused: targets outside the granted namespaces: ${outside.join(', ')}`
      }
      if (state === 'Active') return 'the upstream is already Active'
      return `activate needs Approved, the upstream is ${state}`
    case 'upstream.bindings.set': {
      if (state !== 'Approved' && state !== 'Active')
        return `bindings change only in Approved or Active, the upstream is ${state}`
      const proposed = (event as { bindings?: Binding[] }).bindings ?? []
      const outside = proposed.filter((b) => !isWithinAny(b.target, grants)).map((b) => b.target)
      if (outside.length) return `targets outside the granted namespaces: ${outside.join(', ')}`
      return 'an Active upstream needs at least one binding; deactivate first'
    }
    case 'upstream.deactivate':
      return `deactivate needs Active, the upstream is ${state}`
    case 'upstream.approve':
    case 'upstream.decline':
      return `${event.type.slice('upstream.'.length)} applies to a Pending upstream, it is ${state}`
    case 'upstream.revoke':
      return `revoke does not apply to a ${state} upstream`
    case 'upstream.connection.set':
      return `the connection cannot be edited while ${state}`
    case 'upstream.request':
      return `request again applies to Declined or Revoked, the upstream is ${state}`
    default:
      return `unknown event '${event.type}'`
  }
}

export function explainRequestRefusal(
  state: string,
  _context: Record<string, unknown>,
  event: { type: string }
): string {
  switch (event.type) {
    case 'request.accept':
    case 'request.decline':
    case 'request.expire':
      return `${event.type.slice('request.'.length)} applies to a Pending request, it is ${state}`
    case 'request.revoke':
      return `revoke applies to an Accepted request, it is ${state}`
    case 'request.withdraw':
      return `withdraw applies to Pending or Accepted, the request is ${state}`
    default:
      return `unknown event '${event.type}'`
  }
}
