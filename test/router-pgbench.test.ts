import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { describe, expect } from 'vitest'
import { startMove } from '../src/migrate-tenant/mover.ts'
import { connect, it, startTestRouter, tenantWithKey } from './fixtures.ts'
import { moverDeps } from './move-support.ts'
import { shard } from './support.ts'

/**
 * pgbench, unmodified, through the router's PostgreSQL port: a tenant-scoped custom script in both query
 * modes (prepared: Parse/Bind/Execute; simple: Query), while the tenant moves shard to shard. Every
 * transaction pgbench counts as done must be in the tenant's rows afterwards, and none may fail.
 */

const run = promisify(execFile)

interface Bench {
  processed: number
  failed: number
  tps: number
  output: string
}

async function pgbench(args: string[], env: NodeJS.ProcessEnv): Promise<Bench> {
  const { stdout, stderr } = await run('pgbench', ['-n', '-j', '1', ...args], {
    env: { ...process.env, ...env },
  })
  const output = `${stdout}\n${stderr}`
  const number = (pattern: RegExp) => Number(pattern.exec(output)?.[1] ?? Number.NaN)
  return {
    processed: number(/number of transactions actually processed: (\d+)/),
    failed: number(/number of failed transactions: (\d+)/),
    tps: number(/tps = ([\d.]+)/),
    output,
  }
}

describe('pgbench through the router', () => {
  it('a tenant-scoped script, -M prepared, -M simple and in blocks (-M extended), under moves 1 → 2 → 1 → 2: 0 failed, every insert kept', async ({
    directory,
    redis,
  }) => {
    const tenant = await tenantWithKey('shard-1')
    const router = await startTestRouter({ rateLimitOverride: 100_000_000 })
    const script = path.join(os.tmpdir(), `switchyard-pgbench-${tenant.id}.sql`)
    await writeFile(
      script,
      [
        '\\set n random(1, 1000000000)',
        `insert into customers (tenant_id, name, phone) values ('${tenant.id}', 'pgbench', :n);`,
        `select count(*) from customers where phone = :n::text;`,
        '',
      ].join('\n'),
    )
    // The same in a transaction block: a pinned connection, the tenant entered once, across the cutover.
    const blockScript = script.replace(/\.sql$/, '-block.sql')
    await writeFile(
      blockScript,
      [
        '\\set n random(1, 1000000000)',
        'begin;',
        `insert into customers (tenant_id, name, phone) values ('${tenant.id}', 'pgbench', :n);`,
        `select count(*) from customers where phone = :n::text;`,
        'end;',
        '',
      ].join('\n'),
    )
    const env = { PGPASSWORD: tenant.key, PGCONNECT_TIMEOUT: '5' }
    const through = ['-h', '127.0.0.1', '-p', String(router.pgPort), '-U', tenant.id, 'switchyard']
    const results: Record<string, Bench> = {}
    for (const [mode, target, file] of [
      ['prepared', 'shard-2', script],
      ['simple', 'shard-1', script],
      ['extended', 'shard-2', blockScript],
    ] as const) {
      const running = pgbench(['-M', mode, '-c', '4', '-T', '5', '-f', file, ...through], env)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      const move = await startMove(moverDeps(directory, redis), { tenant: tenant.id, target })
      expect(move.state).toBe('done')
      const result = await running
      results[mode] = result
      expect(result.failed, result.output).toBe(0)
      expect(result.output).not.toMatch(/aborted/)
      expect(result.processed).toBeGreaterThan(0)
    }
    // Every transaction pgbench counted is one insert, and it is on the shard the tenant ended on.
    const [row] = await connect(shard('shard-2').primary)<{ n: number }[]>`
      select count(*)::int as n from customers where tenant_id = ${tenant.id} and name = 'pgbench'`
    const processed = Object.values(results).reduce((sum, result) => sum + result.processed, 0)
    expect(row?.n).toBe(processed)

    // The same script straight to the primary as its owner (no router, no tenant context), for scale.
    const direct = await pgbench(
      ['-M', 'prepared', '-c', '4', '-T', '3', '-f', script, shard('shard-1').primary],
      {},
    )
    console.log(
      `pgbench tps, 4 clients, insert + select per transaction: through the router prepared ${results.prepared?.tps.toFixed(0)}, ` +
        `simple ${results.simple?.tps.toFixed(0)}, in blocks (extended) ${results.extended?.tps.toFixed(0)} (each with a move); direct to the primary ${direct.tps.toFixed(0)}`,
    )
  })
})
