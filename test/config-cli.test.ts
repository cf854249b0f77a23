import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect } from 'vitest'
import { it } from './fixtures.ts'
import { cli, topology } from './support.ts'

// The config file as the CLI reads it (its parsing: test/unit/config.test.ts).
describe('topology config', () => {
  it('the CLI refuses a bad config file at start, naming the field, and writes nothing', async () => {
    const file = path.join(tmpdir(), `switchyard-bad-${process.pid}.json`)
    const bad = {
      ...topology(),
      shards: topology().shards.map((s, i) => (i === 1 ? { ...s, capacity: -5 } : s)),
    }
    await writeFile(file, JSON.stringify(bad))
    const result = await cli(
      ['tenants', 'add', '0190f0e0-0000-7000-8000-0000000000ff', '--shard', 'shard-1'],
      { SWITCHYARD_CONFIG: file },
    )
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/^error \[config_invalid\]: .*shards\.1\.capacity/)
    const list = await cli(['tenants', 'list', '--json'])
    expect((JSON.parse(list.stdout) as { id: string }[]).map((t) => t.id)).not.toContain(
      '0190f0e0-0000-7000-8000-0000000000ff',
    )
  })

  it('a missing config file is a clear error', async () => {
    const result = await cli(['cluster', 'status'], { SWITCHYARD_CONFIG: '/nonexistent/shards.config.ts' })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(
      /^error \[config_unreadable\]: cannot load topology from \/nonexistent\/shards\.config\.ts/,
    )
  })
})
