import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startInstance, type Instance } from '../helpers/instance.ts'

const run = promisify(execFile)

/**
 * thin-edge.io's own examples of its file transfer service (docs/src/references/
 * file-transfer-service.md and its RobotFramework test http_file_transfer_api.robot), run with
 * curl against a real instance: the same calls give the same answers.
 */
describe('file transfer: thin-edge.io examples with curl', () => {
  let inst: Instance
  beforeAll(async () => {
    inst = await startInstance()
  }, 60_000)
  afterAll(async () => {
    await inst?.stop()
  })

  /** curl's body and the status it printed last (`-w`), as the robot test reads them. */
  async function curl(...args: string[]): Promise<{ body: string; status: number }> {
    const { stdout } = await run('curl', ['--silent', '-w', '\n%{http_code}', ...args])
    const cut = stdout.lastIndexOf('\n')
    return { body: stdout.slice(0, cut), status: Number(stdout.slice(cut + 1)) }
  }
  const url = (path: string) => `${inst.httpUrl}/te/v1/files/${path}`

  it('Get Put Delete: PUT answers 201, GET gives the content back, DELETE answers 202', async () => {
    expect(await curl('-X', 'PUT', '-d', 'test of put', url('file_a'))).toEqual({
      body: '',
      status: 201,
    })
    expect(await curl(url('file_a'))).toEqual({ body: 'test of put', status: 200 })
    expect(await curl('-X', 'DELETE', url('file_a'))).toEqual({ body: '', status: 202 })
    const gone = await curl(url('file_a'))
    expect(gone.status).toBe(404)
    expect(JSON.parse(gone.body)).toMatchObject({ error: { code: 'not_found' } })
  })

  it('keeps the path below the root: some/dir/file, replaced by a later upload to the same URL', async () => {
    expect(
      (await curl('-X', 'PUT', '--data-binary', 'some content', url('some/dir/file'))).status
    ).toBe(201)
    expect((await curl(url('some/dir/file'))).body).toBe('some content')
    expect((await curl('-X', 'PUT', '--data-binary', 'newer', url('some/dir/file'))).status).toBe(
      201
    )
    expect((await curl(url('some/dir/file'))).body).toBe('newer')
    // Deleting what is not there is no error, as in thin-edge.
    expect((await curl('-X', 'DELETE', url('never/was'))).status).toBe(202)
  })

  it('a config_snapshot upload to the tedgeUrl a command gave, as the device agent does', async () => {
    const path = `${inst.instanceId}/config_snapshot/tedge-configuration-plugin-local-1111`
    const content = 'a = 1\nb = "two"\n'
    expect((await curl('-X', 'PUT', '--data-binary', content, url(path))).status).toBe(201)
    const got = await fetch(url(path))
    expect(got.status).toBe(200)
    expect(await got.text()).toBe(content)
    expect(got.headers.get('etag')).toBe(`"${createHash('sha256').update(content).digest('hex')}"`)
  })
})
