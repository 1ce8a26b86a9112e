import type { TlsOptions } from './store.ts'

/** An upstream's TLS options as node:tls takes them (MQTT.js and node:https alike), unset left out. */
export function nodeTlsOptions(tls: TlsOptions) {
  return {
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.cert ? { cert: tls.cert } : {}),
    ...(tls.key ? { key: tls.key } : {}),
    ...(tls.servername ? { servername: tls.servername } : {}),
    ...(tls.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: tls.rejectUnauthorized }),
  }
}
