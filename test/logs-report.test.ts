import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, inject } from 'vitest'
import { connect, it } from './fixtures.ts'
import { cli, shard } from './support.ts'

describe('switchyard logs report (pgBadger over a node log)', () => {
  it("lists a deliberately slow query of the shard primary in pgBadger's HTML", async () => {
    const marker = `slow_marker_${Date.now()}`
    // Over the seed's 100 ms: the node logs it (log_min_duration_statement).
    await connect(shard('shard-1').primary).unsafe(`select pg_sleep(0.2) as ${marker}`)
    const out = path.join(await mkdtemp(path.join(tmpdir(), 'switchyard-pgbadger-')), 'report.html')
    const made = await cli(['logs', 'report', '--node', 'shard-1-primary', '--out', out, '--json'], {
      SWITCHYARD_HOME: inject('home'),
    })
    expect(made.code, made.stderr).toBe(0)
    expect(JSON.parse(made.stdout)).toMatchObject({ node: 'shard-1-primary', out })
    const html = await readFile(out, 'utf8')
    expect(html).toContain('pgBadger')
    expect(html).toContain(marker)
  })

  it('names the problem: a node that does not exist, a home without the logs', async () => {
    const unknown = await cli(['logs', 'report', '--node', 'shard-9-primary'], {
      SWITCHYARD_HOME: inject('home'),
    })
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('[invalid_input]')
    expect(unknown.stderr).toContain('shard-1-primary')
    const elsewhere = await cli(['logs', 'report'], { SWITCHYARD_HOME: tmpdir() })
    expect(elsewhere.code).toBe(1)
    expect(elsewhere.stderr).toContain('[log_missing]')
  })
})
