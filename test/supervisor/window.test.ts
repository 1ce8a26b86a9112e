import { describe, expect, it } from 'vitest'
import { createForwardWindow } from '../../services/supervisor/window.ts'

/** The window's bookkeeping, driven by hand: which upstream PUBACK arrives when is up to the test. */
function harness(size: number) {
  let clock = 1_000
  const pending: Array<{ topic: string; done: (err?: Error) => void }> = []
  const acked: number[] = []
  const flow: string[] = []
  const win = createForwardWindow({
    size,
    publish: (topic, _payload, _opts, done) => void pending.push({ topic, done }),
    ack: (id) => void acked.push(id),
    pause: () => void flow.push('pause'),
    resume: () => void flow.push('resume'),
    onError: (err) => {
      throw err
    },
    now: () => clock,
  })
  const msg = (messageId: number) => ({
    payload: Buffer.from('x'),
    qos: 1 as const,
    retain: false,
    messageId,
  })
  return {
    win,
    pending,
    acked,
    flow,
    msg,
    advance: (ms: number) => void (clock += ms),
  }
}

describe('forward window', () => {
  it('acknowledges locally in arrival order, only once every copy was acknowledged upstream', () => {
    const h = harness(8)
    h.win.push(h.msg(1), ['a/1', 'b/1']) // two bindings: two copies
    h.win.push(h.msg(2), ['a/2'])
    expect(h.pending.map((p) => p.topic)).toEqual(['a/1', 'b/1', 'a/2'])
    h.pending[2]!.done() // message 2 first: it must wait for message 1 [MQTT-4.6.0-2]
    h.pending[0]!.done()
    expect(h.acked).toEqual([])
    h.pending[1]!.done()
    expect(h.acked).toEqual([1, 2])
    expect(h.win).toMatchObject({ waiting: 0, forwarded: 2 })
  })

  it('keeps at most `size` publishes in flight upstream', () => {
    const h = harness(2)
    for (let id = 1; id <= 5; id++) h.win.push(h.msg(id), [`t/${id}`])
    expect(h.pending).toHaveLength(2)
    h.pending[0]!.done()
    expect(h.pending).toHaveLength(3)
    expect(h.acked).toEqual([1])
  })

  it('reports the age of the oldest waiting message as the lag', () => {
    const h = harness(4)
    expect(h.win.lagMs()).toBe(0)
    h.win.push(h.msg(1), ['t/1'])
    h.advance(300)
    h.win.push(h.msg(2), ['t/2'])
    h.advance(200)
    expect(h.win.lagMs()).toBe(500)
    h.pending[0]!.done()
    expect(h.win.lagMs()).toBe(200) // message 2 is now the oldest
    h.pending[1]!.done()
    expect(h.win.lagMs()).toBe(0)
  })

  it('pauses the local socket at 2 × size waiting and resumes once back to size', () => {
    const h = harness(2)
    for (let id = 1; id <= 4; id++) h.win.push(h.msg(id), [`t/${id}`])
    expect(h.flow).toEqual(['pause'])
    h.pending[0]!.done()
    expect(h.flow).toEqual(['pause']) // 3 waiting: still above size
    h.pending[1]!.done()
    expect(h.flow).toEqual(['pause', 'resume'])
  })
})
