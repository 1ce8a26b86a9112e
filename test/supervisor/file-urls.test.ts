import { describe, expect, it } from 'vitest'
import { createRemapper } from '../../services/supervisor/remap.ts'
import { createFileUrlRewriter } from '../../services/supervisor/file-urls.ts'

const remap = createRemapper([
  { source: 'site1', target: 'acme/site1/files', direction: 'in' },
  { source: 'te', target: 'acme/site1/te', direction: 'both' },
])
const rewriter = (base: string | undefined) =>
  createFileUrlRewriter({
    teRoot: 'te',
    localFilesUrl: () => base,
    toLocal: (t) => remap.toLocal(t),
  })
const command = (body: object) => Buffer.from(JSON.stringify(body))
const TOPIC = 'te/device/child01///cmd/firmware_update/42'

describe('tedgeUrl coming down a link', () => {
  it("points at this instance's file service, at the path the binding maps it to", () => {
    const out = rewriter('http://10.0.0.5:8080').inbound(
      TOPIC,
      command({
        status: 'init',
        tedgeUrl: 'https://cloud.example:8443/te/v1/files/acme/site1/files/fw/v%20two.bin',
        version: '2',
      })
    )
    expect(JSON.parse(out.toString())).toEqual({
      status: 'init',
      tedgeUrl: 'http://10.0.0.5:8080/te/v1/files/site1/fw/v%20two.bin',
      version: '2',
    })
  })

  it('leaves alone what it cannot or need not rewrite, byte for byte', () => {
    const r = rewriter('http://10.0.0.5:8080')
    const cases: Array<[string, Buffer]> = [
      // a file no binding brings in
      [TOPIC, command({ status: 'init', tedgeUrl: 'http://c/te/v1/files/other/fw.bin' })],
      // not a file service URL, or not a URL
      [TOPIC, command({ status: 'init', tedgeUrl: 'https://downloads.example/fw.bin' })],
      [TOPIC, command({ status: 'init', tedgeUrl: 'not a url' })],
      // not a command topic (a capability, a measurement)
      [
        'te/device/child01///cmd/firmware_update',
        command({ tedgeUrl: 'http://c/te/v1/files/acme/site1/files/x' }),
      ],
      [
        'te/device/child01///m/temp',
        command({ tedgeUrl: 'http://c/te/v1/files/acme/site1/files/x' }),
      ],
      // not JSON, no tedgeUrl
      [TOPIC, Buffer.from('{"tedgeUrl": nope')],
      [TOPIC, command({ status: 'init' })],
    ]
    for (const [topic, payload] of cases) expect(r.inbound(topic, payload)).toBe(payload)
    // The local address is not known yet (HTTP not listening): unchanged.
    const early = command({ tedgeUrl: 'http://c/te/v1/files/acme/site1/files/x' })
    expect(rewriter(undefined).inbound(TOPIC, early)).toBe(early)
  })
})
