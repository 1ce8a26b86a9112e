import { describe, expect, it } from 'vitest'
import {
  autoRegistration,
  checkCommandTransition,
  errorMessage,
  parseEntityTopicId,
  parseRegistration,
  parseTeTopic,
  validateAlarm,
  validateCommandStatus,
  validateEvent,
  validateMeasurement,
} from '../../services/gateway/edge/te-schema.ts'

// Topic/payload pairs are the `tedge mqtt pub` examples of thin-edge's reference docs
// (docs/src/references/mqtt-api.md, operate/entity-management/*, understand/thin-edge-json.md).

const problem = expect.objectContaining({ problem: expect.any(String) })

describe('parseTeTopic', () => {
  it('splits the four identifier segments from the channel', () => {
    expect(parseTeTopic('te/device/main///m/environment')).toEqual({
      entity: { topicId: 'device/main//', segments: ['device', 'main', '', ''] },
      channel: { kind: 'm', type: 'environment', meta: false },
    })
    expect(parseTeTopic('te/device/child01/service/nodered/m/environment')).toEqual({
      entity: {
        topicId: 'device/child01/service/nodered',
        segments: ['device', 'child01', 'service', 'nodered'],
      },
      channel: { kind: 'm', type: 'environment', meta: false },
    })
  })

  it('reads an entity topic as having no channel', () => {
    expect(parseTeTopic('te/device/child01//')).toEqual({
      entity: { topicId: 'device/child01//', segments: ['device', 'child01', '', ''] },
    })
    expect(parseTeTopic('te/factory01/hallA/packaging/belt001/e/running_status')).toMatchObject({
      entity: { topicId: 'factory01/hallA/packaging/belt001' },
      channel: { kind: 'e', type: 'running_status' },
    })
  })

  it.each([
    ['te/device/main///m/', { kind: 'm', type: '', meta: false }],
    ['te/device/main///m/battery_reading/meta', { kind: 'm', type: 'battery_reading', meta: true }],
    ['te/device/child1/service/app/e/login', { kind: 'e', type: 'login', meta: false }],
    ['te/device/main///a/temperature_high', { kind: 'a', type: 'temperature_high', meta: false }],
    ['te/device/main///cmd/config_snapshot', { kind: 'cmd', operation: 'config_snapshot' }],
    [
      'te/device/main///cmd/software_list/123',
      { kind: 'cmd', operation: 'software_list', id: '123' },
    ],
    [
      'te/device/main/service/tedge-agent/cmd/health/check',
      { kind: 'cmd', operation: 'health', id: 'check' },
    ],
    ['te/device/main///twin/device_OS', { kind: 'twin', fragment: 'device_OS' }],
    ['te/device/main/service/tedge-agent/status/health', { kind: 'status', component: 'health' }],
    [
      'te/device/main/service/tedge-agent/signal/sync_log_upload',
      { kind: 'signal', type: 'sync_log_upload' },
    ],
    ['te/device/main/service/tedge-agent/config', { kind: 'config' }],
  ])('parses the channel of %s', (topic, channel) => {
    expect(parseTeTopic(topic)).toMatchObject({ channel })
  })

  it.each([
    ['te/device/main', /2 identifier segment/],
    ['te/device/main/', /3 identifier segment/],
    ['te/device/main///x/temperature', /unknown channel category "x"/],
    ['te/device/main///', /unknown channel category ""/],
    ['te/device/main///m/environment/extra', /"m" takes/],
    ['te/device/main///a/high/meta/extra', /"a" takes/],
    ['te/device/main///cmd', /"cmd" takes/],
    ['te/device/main///cmd/restart/', /command id is empty/],
    ['te/device/main///twin', /"twin" takes/],
    ['te/device/main///status/health/more', /"status" takes/],
    ['te/device/main///config/x', /"config" takes no/],
    ['te/+/+/+/+/m/+', /wildcard/],
  ])('refuses %s', (topic, message) => {
    const parsed = parseTeTopic(topic)
    expect(parsed).toEqual(problem)
    expect((parsed as { problem: string }).problem).toMatch(message)
  })

  it('ignores topics outside the root and the errors feed, and honours another root', () => {
    expect(parseTeTopic('tedge/measurements')).toBeNull()
    expect(parseTeTopic('te')).toBeNull()
    expect(parseTeTopic('te/errors')).toBeNull()
    expect(parseTeTopic('te/device/main///m/env', 'thin-edge')).toBeNull()
    expect(parseTeTopic('thin-edge/device/main///m/env', 'thin-edge')).toMatchObject({
      entity: { topicId: 'device/main//' },
    })
  })
})

describe('parseEntityTopicId', () => {
  it('pads a short id as thin-edge does and refuses a long one', () => {
    expect(parseEntityTopicId('device/child0')).toMatchObject({ topicId: 'device/child0//' })
    expect(parseEntityTopicId('device/main/service/x/y')).toEqual(problem)
  })
})

describe('parseRegistration', () => {
  const register = (topicId: string, payload: string) => {
    const parsed = parseRegistration(topicId, payload)
    if (!('action' in parsed) || parsed.action !== 'register')
      throw new Error(JSON.stringify(parsed))
    return parsed.registration
  }

  it('registers the main device with its external id and twin data', () => {
    expect(
      register('device/main//', '{ "@type": "device", "@id": "tedge001", "type": "Gateway" }')
    ).toEqual({
      topicId: 'device/main//',
      type: 'device',
      parent: null,
      externalId: 'tedge001',
      twin: { type: 'Gateway' },
    })
  })

  it('derives a service parent from a default-scheme topic, else the main device', () => {
    expect(
      register(
        'device/main/service/nodered',
        '{"@type": "service", "name": "nodered", "type": "systemd"}'
      )
    ).toEqual({
      topicId: 'device/main/service/nodered',
      type: 'service',
      parent: 'device/main//',
      twin: { name: 'nodered', type: 'systemd' },
    })
    expect(register('device/child0/service/nodered', '{"@type": "service"}').parent).toBe(
      'device/child0//'
    )
    expect(
      register('component_namespace/service/nodered/instance-1', '{"@type": "service"}').parent
    ).toBe('device/main//')
    expect(
      register(
        'component_namespace/service/nodered/instance-1',
        '{"@type": "service", "@parent": "device/main//", "name": "nodered"}'
      ).parent
    ).toBe('device/main//')
  })

  it('makes a child device a child of the main device unless @parent says otherwise', () => {
    expect(
      register(
        'device/child01//',
        '{"@type": "child-device", "name": "child01", "type": "SmartHomeHub"}'
      )
    ).toEqual({
      topicId: 'device/child01//',
      type: 'child-device',
      parent: 'device/main//',
      twin: { name: 'child01', type: 'SmartHomeHub' },
    })
    expect(
      register(
        'device/nested_child01//',
        '{"@type": "child-device", "@parent": "device/child01//"}'
      ).parent
    ).toBe('device/child01//')
    // The entity-management page writes the parent short (and with a trailing comma, see below).
    expect(
      register('device/child01//', '{"@type": "child-device", "@parent": "device/child0"}').parent
    ).toBe('device/child0//')
  })

  it('keeps @health for a child device and @-prefixed unknown keys as twin data', () => {
    expect(
      register(
        'device/child01//',
        '{"@type": "child-device", "@health": "device/child01/service/tedge-agent", "@note": 1}'
      )
    ).toMatchObject({ healthEndpoint: 'device/child01/service/tedge-agent', twin: { '@note': 1 } })
  })

  it('reads an empty payload as deregistration', () => {
    expect(parseRegistration('device/child01//', '')).toEqual({
      action: 'deregister',
      topicId: 'device/child01//',
    })
  })

  it.each([
    // Verbatim from operate/entity-management/mqtt_api.md: the trailing comma is not JSON.
    [
      'device/child01//',
      '{\n  "@type": "child-device",\n  "@parent": "device/child0",\n}',
      /not JSON/,
    ],
    ['device/child01//', '["child-device"]', /JSON object/],
    ['device/child01//', '{"name": "child01"}', /"@type"/],
    ['device/child01//', '{"@type": "gateway"}', /"@type"/],
    ['device/child01//', '{"@type": "device"}', /reserved for the main device/],
    ['device/main//', '{"@type": "child-device"}', /main device/],
    ['device/main//', '{"@type": "device", "@parent": "device/other//"}', /main device can not/],
    ['device/child01//', '{"@type": "child-device", "@parent": "device/child01//"}', /own/],
    ['device/child01//', '{"@type": "child-device", "@parent": 7}', /"@parent" must be/],
    ['device/child01//', '{"@type": "child-device", "@parent": "a/b/c/d/e"}', /more than 4/],
    ['device/child01//', '{"@type": "child-device", "@id": 42}', /"@id"/],
    [
      'device/main/service/x',
      '{"@type": "service", "@health": "device/main//"}',
      /only valid for child-device/,
    ],
  ])('refuses %s %s', (topicId, payload, message) => {
    const parsed = parseRegistration(topicId, payload)
    expect(parsed).toEqual(problem)
    expect((parsed as { problem: string }).problem).toMatch(message)
  })
})

describe('autoRegistration', () => {
  it('registers a child device under the main device', () => {
    expect(autoRegistration('device/rpi1001//')).toEqual([
      {
        topicId: 'device/rpi1001//',
        type: 'child-device',
        parent: 'device/main//',
        twin: { name: 'rpi1001' },
      },
    ])
  })

  it('registers the device of a service first, then the service', () => {
    expect(autoRegistration('device/rpi1002/service/collectd')).toEqual([
      {
        topicId: 'device/rpi1002//',
        type: 'child-device',
        parent: 'device/main//',
        twin: { name: 'rpi1002' },
      },
      {
        topicId: 'device/rpi1002/service/collectd',
        type: 'service',
        parent: 'device/rpi1002//',
        twin: { name: 'collectd' },
      },
    ])
    expect(autoRegistration('device/main/service/nodered')).toEqual([
      {
        topicId: 'device/main/service/nodered',
        type: 'service',
        parent: 'device/main//',
        twin: { name: 'nodered' },
      },
    ])
  })

  it('has nothing to add for the main device and does not apply to custom schemes', () => {
    expect(autoRegistration('device/main//')).toEqual([])
    expect(autoRegistration('factory01/hallA/packaging/belt001')).toBeNull()
    expect(autoRegistration('device///')).toBeNull()
    expect(autoRegistration('device/rpi1001/service/')).toBeNull()
    expect(autoRegistration('device/rpi1001/other/x')).toBeNull()
  })
})

describe('validateMeasurement', () => {
  it('accepts single values, groups, time and properties', () => {
    expect(validateMeasurement('{"temperature": 25}')).toEqual({ values: { temperature: 25 } })
    expect(
      validateMeasurement(`{
        "time": "2020-10-15T05:30:47+00:00",
        "temperature": 25,
        "location": { "latitude": 32.54, "longitude": -117.67, "altitude": 98.6 },
        "pressure": 98
      }`)
    ).toEqual({
      time: '2020-10-15T05:30:47+00:00',
      values: {
        temperature: 25,
        location: { latitude: 32.54, longitude: -117.67, altitude: 98.6 },
        pressure: 98,
      },
    })
    expect(validateMeasurement('{"time": 1701949168.001, "test": 1023}')).toMatchObject({
      time: 1701949168.001,
    })
    expect(
      validateMeasurement(
        '{"temperature": 25, "properties": {"sensor": "DS18B20", "has_alarm": false, "samples": [25.1]}}'
      )
    ).toMatchObject({ properties: { sensor: 'DS18B20', has_alarm: false } })
  })

  it('takes any key not starting with an underscore, as thin-edge does', () => {
    expect(validateMeasurement('{"temp-1": 1, "ä.b c": {"x-y": 2}}')).toEqual({
      values: { 'temp-1': 1, 'ä.b c': { 'x-y': 2 } },
    })
  })

  it.each([
    ['{"three_phase_current": {"phase1": {"L1": 9.5}, "phase2": {"L2": 10.3}}}', /nests too deep/],
    ['{"temperature": "25"}', /must be a number, got string/],
    ['{"running": true}', /must be a number, got boolean/],
    ['{"temperature": null}', /got null/],
    ['{"samples": [1, 2]}', /got an array/],
    ['{"current": {"L1": "9.5"}}', /"current.L1" must be a number/],
    ['{"_private": 1}', /must not start with an underscore/],
    ['{"current": {"_L1": 1}}', /must not start with an underscore/],
    ['{"current": {"time": 1}}', /belongs at the root/],
    ['{"current": {}}', /at least one/],
    ['{"time": "2020-10-15T05:30:47+00:00"}', /at least one/],
    ['{"time": "yesterday", "t": 1}', /"time" must be/],
    ['{"time": null, "t": 1}', /"time" must be/],
    ['{"huge": 1e999}', /out of float64 range/],
    ['{"properties": "x", "t": 1}', /"properties" must be/],
    ['[1]', /JSON object/],
    ['', /not JSON/],
  ])('refuses %s', (payload, message) => {
    const parsed = validateMeasurement(payload)
    expect(parsed).toEqual(problem)
    expect((parsed as { problem: string }).problem).toMatch(message)
  })
})

describe('validateEvent', () => {
  it('accepts text, time and custom fragments, and an empty payload', () => {
    expect(
      validateEvent(`{
        "text": "A user just logged in",
        "time": "2021-01-01T05:30:45+00:00",
        "someOtherCustomFragment": { "nested": { "value": "extra info" } }
      }`)
    ).toEqual({
      text: 'A user just logged in',
      time: '2021-01-01T05:30:45+00:00',
      extras: { someOtherCustomFragment: { nested: { value: 'extra info' } } },
    })
    expect(validateEvent('')).toEqual({ extras: {} })
  })

  it('refuses a non-string text, a bad time and non-objects', () => {
    expect(validateEvent('{"text": 5}')).toEqual({ problem: 'event "text" must be a string' })
    expect(validateEvent('{"time": "2021-01-01"}')).toEqual(problem)
    expect(validateEvent('"login"')).toEqual(problem)
  })
})

describe('validateAlarm', () => {
  it('raises with severity, text and time; `{}` raises with defaults', () => {
    expect(validateAlarm('{"text": "Temperature is very high", "severity": "critical"}')).toEqual({
      action: 'raise',
      severity: 'critical',
      text: 'Temperature is very high',
      extras: {},
    })
    expect(validateAlarm('{}')).toEqual({ action: 'raise', extras: {} })
  })

  it('clears on an empty retained payload and insists on retain when told', () => {
    expect(validateAlarm('')).toEqual({ action: 'clear' })
    expect(validateAlarm('', { retained: true })).toEqual({ action: 'clear' })
    expect(validateAlarm('', { retained: false })).toEqual(problem)
  })

  it('refuses a non-string severity or text', () => {
    expect(validateAlarm('{"severity": 3}')).toEqual(problem)
    expect(validateAlarm('{"text": ["x"]}')).toEqual({ problem: 'alarm "text" must be a string' })
  })
})

describe('command status', () => {
  it('reads status, reason and fields; a missing status means init; empty clears', () => {
    expect(validateCommandStatus('{"status": "init"}')).toEqual({
      action: 'update',
      status: 'init',
      fields: { status: 'init' },
    })
    expect(validateCommandStatus('{}')).toMatchObject({ action: 'update', status: 'init' })
    expect(validateCommandStatus('{"status": "failed", "reason": "not timely"}')).toMatchObject({
      status: 'failed',
      reason: 'not timely',
    })
    expect(validateCommandStatus('')).toEqual({ action: 'clear' })
    expect(validateCommandStatus('{"status": 1}')).toEqual(problem)
    expect(validateCommandStatus('{"status": ""}')).toEqual(problem)
  })

  it('allows init → … → successful|failed and nothing after the end', () => {
    expect(checkCommandTransition(undefined, 'init')).toBeNull()
    expect(checkCommandTransition('init', 'executing')).toBeNull()
    expect(checkCommandTransition('executing', 'successful')).toBeNull()
    expect(checkCommandTransition('init', 'failed')).toBeNull()
    expect(checkCommandTransition('executing', 'downloading')).toBeNull()
    expect(checkCommandTransition('successful', 'successful')).toBeNull()
    expect(checkCommandTransition(undefined, 'executing')).toEqual(problem)
    expect(checkCommandTransition('successful', 'executing')).toEqual(problem)
    expect(checkCommandTransition('failed', 'init')).toEqual(problem)
    expect(checkCommandTransition('executing', 'init')).toEqual(problem)
  })
})

describe('errorMessage', () => {
  it('is free text on <root>/errors naming the topic and the problem', () => {
    expect(errorMessage('te/device/main///m/x', { problem: 'bad' })).toEqual({
      topic: 'te/errors',
      payload: 'Invalid message on te/device/main///m/x: bad',
    })
    expect(errorMessage('x/device/main//', 'nope', 'x').topic).toBe('x/errors')
  })
})
