import { z } from 'zod'
import { port, bool, optionalString } from './config-values.ts'

/** The broker gateway's keys: listeners, limits and bounds, who may connect (config.ts composes them; README, Configuration). */
export const gatewayKeys = {
  mqttHost: z.string().min(1).default('0.0.0.0').describe('MQTT listen address'),
  mqttPort: port.default(1883).describe('MQTT over TCP'),
  trustProxy: bool
    .default(false)
    .describe(
      'one proxy in front: the client IP is the last X-Forwarded-For entry (HTTP, MQTT over WebSocket) or the PROXY protocol header (MQTT over TCP/TLS); without them a client is never loopback'
    ),
  mqttWsPort: port.optional().describe('MQTT over WebSocket (path /mqtt and /); off when absent'),
  mqttTlsPort: port.optional().describe('MQTT over TLS; off when absent; needs tlsCert and tlsKey'),
  mqttWssPort: port
    .optional()
    .describe('MQTT over secure WebSocket; off when absent; needs tlsCert and tlsKey'),
  tlsCert: optionalString.describe('PEM certificate chain file for the TLS and WSS listeners'),
  tlsKey: optionalString.describe('PEM private key file for the TLS and WSS listeners'),
  tlsCa: optionalString.describe(
    'PEM CA file; when set, TLS clients may present certificates signed by it'
  ),
  maxPacketSize: z.coerce
    .number()
    .int()
    .min(64)
    .max(268_435_455) // the largest remaining length MQTT 3.1.1 can encode [MQTT-2.2.3]
    .default(1_048_576)
    .describe('largest MQTT packet accepted, in bytes; a bigger one closes its connection'),
  maxConnections: z.coerce
    .number()
    .int()
    .min(1)
    .default(10_000)
    .describe('MQTT clients per gateway; more are closed without a CONNACK (clients retry)'),
  maxPendingMessages: z.coerce
    .number()
    .int()
    .min(1)
    .default(10_000)
    .describe(
      'deliveries one connection may have waiting for its socket; past it QoS 0 is dropped, a persistent session catches up from its queue, and QoS 1/2 to any other client cuts it as a slow consumer'
    ),
  maxPendingBytes: z.coerce
    .number()
    .int()
    .min(1_024)
    .default(16 * 1_048_576)
    .describe('payload bytes one connection may have waiting for its socket (16 MiB)'),
  writeStallSec: z.coerce
    .number()
    .int()
    .min(0)
    .max(86_400)
    .default(60)
    .describe(
      "seconds a connection's socket may take nothing while deliveries wait for it; then it is closed (its persistent session keeps its queue); 0 = never"
    ),
  sessionMaxQueued: z.coerce
    .number()
    .int()
    .min(1)
    .default(10_000)
    .describe(
      "QoS 1/2 messages a client's persistent session may have queued, across gateways; more are not queued (counted)"
    ),
  bridgeMaxQueued: z.coerce
    .number()
    .int()
    .min(1)
    .default(1_000_000)
    .describe(
      "QoS 1 messages a bridge's local session may have queued (its backlog while the upstream is down); more are not queued"
    ),
  maxRetainedMessages: z.coerce
    .number()
    .int()
    .min(1)
    .default(100_000)
    .describe(
      'retained topics, cluster-wide (each gateway holds all in memory); past it a new one is not kept'
    ),
  maxRetainedBytes: z.coerce
    .number()
    .int()
    .min(1_024)
    .default(256 * 1_048_576)
    .describe(
      'topic and payload bytes of all retained messages (256 MiB); past it a new one is not kept'
    ),
  sessionExpirySec: z.coerce
    .number()
    .int()
    .min(0)
    .default(604_800)
    .describe(
      'seconds a persistent session may go unseen before its subscriptions and queue are erased (7 days); 0 = never; bridges exempt'
    ),
  maxInboundQos2: z.coerce
    .number()
    .int()
    .min(1)
    .max(65_535)
    .default(100)
    .describe(
      'QoS 2 PUBLISHes a client may have awaiting PUBREL (kept with payloads); one more closes its connection'
    ),
  keepAliveMin: z.coerce
    .number()
    .int()
    .min(0)
    .max(65_535)
    .default(0)
    .describe('seconds; smaller non-zero client keep-alives are raised to it'),
  keepAliveMax: z.coerce
    .number()
    .int()
    .min(0)
    .max(65_535)
    .default(0)
    .describe(
      'seconds; a larger (or zero) keep-alive gets CONNACK 2, as mosquitto max_keepalive; 0 = no bound'
    ),
  anonymous: z
    .enum(['loopback', 'always', 'never'])
    .default('loopback')
    .describe('MQTT clients without a username: from loopback addresses only, always or never'),
  users: z
    .array(
      z.object({ username: z.string().min(1), passwordHash: z.string().startsWith('scrypt$') })
    )
    .default([])
    .describe(
      'local MQTT users (config file only): [{username, passwordHash}], hashes from `hashPassword`'
    ),
  authCacheMs: z.coerce
    .number()
    .int()
    .min(0)
    .default(5_000)
    .describe(
      'ms an MQTT authentication answer (accepted or refused) is reused, keyed by an HMAC of username and password; 0 = none'
    ),
  authCacheMaxEntries: z.coerce
    .number()
    .int()
    .min(0)
    .default(10_000)
    .describe('cached MQTT authentication answers; past it the oldest is dropped (counted)'),
  scryptConcurrency: z.coerce
    .number()
    .int()
    .min(1)
    .default(2)
    .describe('local-user password checks (scrypt, 32 MiB each) running at once'),
  storeAuthConcurrency: z.coerce
    .number()
    .int()
    .min(1)
    .default(16)
    .describe('bridge credential checks against the binding store running at once'),
  authQueueMax: z.coerce
    .number()
    .int()
    .min(0)
    .default(64)
    .describe(
      'credential checks waiting per kind (scrypt, store) beyond those running; more are closed without a CONNACK (clients retry) (counted)'
    ),
  connectRatePerSec: z.coerce
    .number()
    .min(0.01)
    .default(10)
    .describe(
      'failed MQTT CONNECTs per second per source (IPv4 address, IPv6 /64), token bucket; a good login gives its token back; more are closed without a CONNACK (clients retry)'
    ),
  connectRateBurst: z.coerce
    .number()
    .int()
    .min(1)
    .default(50)
    .describe('failed MQTT CONNECTs a source may make at once'),
  connectPendingPerSource: z.coerce
    .number()
    .int()
    .min(1)
    .default(8)
    .describe(
      'MQTT CONNECTs of one source being authenticated at once; more are closed without a CONNACK (clients retry)'
    ),
  connectRateSources: z.coerce
    .number()
    .int()
    .min(100)
    .default(10_000)
    .describe('sources the CONNECT budget remembers; past it the least recently seen is forgotten'),
  proxyHeaderTimeoutMs: z.coerce
    .number()
    .int()
    .min(100)
    .default(5_000)
    .describe(
      'with trustProxy: ms a TCP/TLS connection may take to send its PROXY header; then it is closed (counted)'
    ),
  bridgeRevalidateMs: z.coerce
    .number()
    .int()
    .min(0)
    .default(30_000)
    .describe(
      'ms between re-checks of every connected bridge against the store (a backstop to revocation events); 0 = none'
    ),
  gatewayDrainMs: z.coerce
    .number()
    .int()
    .min(0)
    .max(60_000)
    .default(2_000)
    .describe(
      'on stop, at most this many ms for in-flight PUBLISHes to be acknowledged and in-flight deliveries to be acknowledged by their clients before connections close; 0 = close at once'
    ),
  busCheckMs: z.coerce
    .number()
    .int()
    .min(0)
    .max(60_000)
    .default(2_000)
    .describe(
      'ms between round trips from a gateway to the bus; after 3 failed in a row it drops its clients (they move to a gateway that reaches it) and refuses CONNECTs until one succeeds; 0 = off'
    ),
  holdWritesMs: z.coerce
    .number()
    .int()
    .min(0)
    .max(1_000)
    .optional()
    .describe(
      "ms a QoS 1 message's queue write for a persistent subscriber connected to the same gateway and acknowledging within half of it waits for that PUBACK (then nothing is written); the publisher's PUBACK waits as long; 0 = write at once; default 20 on a NATS bus, 0 on the in-process bus (measured: it pays where a write is a round trip)"
    ),
  queueSweepMs: z.coerce
    .number()
    .int()
    .min(0)
    .default(5_000)
    .describe(
      "ms between sweeps of connected persistent sessions' queues for messages whose live copy never came (a NATS node died); 0 = none"
    ),
  queueSweepAgeMs: z.coerce
    .number()
    .int()
    .min(100)
    .default(5_000)
    .describe('ms a queued message waits for its live copy before a sweep delivers it'),
  queueSweepSessions: z.coerce
    .number()
    .int()
    .min(1)
    .default(100)
    .describe('connected persistent sessions whose queue one sweep lists (round robin)'),
  teRoot: z
    .string()
    .regex(/^([^+#/]+(\/[^+#/]+)*)?$/, 'topic levels without wildcards or empty levels')
    .default('te')
    .describe(
      'thin-edge.io topic root: messages under it are checked, problems go to <root>/errors (still delivered); deregistering clears descendants; empty = off'
    ),
  teAutoRegister: bool
    .default(true)
    .describe(
      'with teRoot: an unregistered default-scheme entity (device/<id>//, device/<id>/service/<id>) gets its retained registration when it first publishes'
    ),
  gatewayId: optionalString.describe(
    "this gateway's name in stats and metrics; made at start when absent"
  ),
}
