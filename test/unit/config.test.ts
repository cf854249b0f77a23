import { describe, expect, it } from 'vitest'
import { parseTopology } from '../../src/config/load.ts'

const valid = {
  directory: 'postgres://u:p@127.0.0.1:5440/switchyard',
  shards: [{ id: 'shard-1', primary: 'postgres://u:p@127.0.0.1:5441/app' }],
}

describe('topology config', () => {
  it('fills the seed defaults: capacity 100, active, router port 8080', () => {
    const parsed = parseTopology(valid, 'test', {})
    expect(parsed.shards[0]).toMatchObject({ capacity: 100, state: 'active', replicas: [] })
    expect(parsed.router.port).toBe(8080)
    expect(parsed.redis).toBeUndefined()
  })

  it.each([
    [{ ...valid, directory: 'mysql://x@y/z' }, 'directory: must be a postgres:// URL'],
    [{ ...valid, shards: [{ ...valid.shards[0], capacity: 0 }] }, 'shards.0.capacity'],
    [{ ...valid, shards: [{ ...valid.shards[0], state: 'sleeping' }] }, 'shards.0.state'],
    [{ ...valid, shards: [valid.shards[0], valid.shards[0]] }, 'shards.1.id: duplicate shard id "shard-1"'],
    [{ ...valid, shards: [] }, 'shards:'],
    [{ ...valid, shards: [{ ...valid.shards[0], primry: 'x' }] }, 'shards.0'],
    [{ ...valid, redis: 'http://nope' }, 'redis: must be a redis:// URL'],
  ])('%j fails naming the field', (input, field) => {
    expect(() => parseTopology(input, 'test', {})).toThrowError(
      expect.objectContaining({ code: 'config_invalid', message: expect.stringContaining(field) }),
    )
  })

  it('environment variables override the file and are named when wrong', () => {
    const parsed = parseTopology(valid, 'test', {
      SWITCHYARD_ROUTER_PORT: '9090',
      SWITCHYARD_REDIS_URL: 'redis://127.0.0.1:7000',
    })
    expect(parsed.router.port).toBe(9090)
    expect(parsed.redis).toBe('redis://127.0.0.1:7000')
    expect(() => parseTopology(valid, 'test', { SWITCHYARD_ROUTER_PORT: 'eighty' })).toThrowError(
      /router\.port \(from SWITCHYARD_ROUTER_PORT\)/,
    )
    expect(() => parseTopology(valid, 'test', { SWITCHYARD_SHARDS: '[{' })).toThrowError(
      /SWITCHYARD_SHARDS is not JSON/,
    )
  })
})
