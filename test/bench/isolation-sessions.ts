/**
 * The stalled load of the isolation bench, in its own process: SESSIONS persistent sessions
 * resume their backlogs, the first NEVER_READ of them never reading a byte. The healthy
 * subscriber is measured in the bench's process: sharing an event loop with 8 clients parsing
 * and acknowledging a backlog, its latency was partly the readers' own client work, which no
 * broker can isolate anyone from. Argv: url port tag sessions neverRead. Prints `ready` once
 * every session sent its CONNECT; SIGTERM ends them.
 */
import { connect as netConnect, type Socket } from 'node:net'
import mqtt, { type MqttClient } from 'mqtt'
import * as mqttPacket from 'mqtt-packet'

const [url, portArg, tag, sessionsArg, neverReadArg] = process.argv.slice(2)
const port = Number(portArg)
const sessions = Number(sessionsArg)
const neverRead = Number(neverReadArg)

/** A persistent session that sends CONNECT and then never reads its socket. */
function neverReads(clientId: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1', () => {
      s.pause()
      s.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: false,
          clientId,
          keepalive: 0,
        })
      )
      resolve(s)
    })
    s.on('error', () => {}) // cut as a slow consumer: expected
    s.once('error', reject)
  })
}

function reader(clientId: string): Promise<MqttClient> {
  const c = mqtt.connect(url!, { protocolVersion: 4, reconnectPeriod: 0, clientId, clean: false })
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c))
    c.once('error', reject)
  })
}

const silent: Socket[] = []
const readers: MqttClient[] = []
for (let i = 0; i < sessions; i++) {
  if (i < neverRead) silent.push(await neverReads(`${tag}-s${i}`))
  else readers.push(await reader(`${tag}-s${i}`))
}
process.stdout.write('ready\n')
process.once('SIGTERM', () => {
  for (const s of silent) s.destroy()
  void Promise.all(readers.map((r) => r.endAsync())).finally(() => process.exit(0))
})
