/**
 * `npm run bench:shard`: what the router's transaction costs PostgreSQL, piece by piece. pgbench (C, prepared
 * statements, 8 clients, 4 s) runs variants of a read on shard-1's replica as the router's role, and the bench
 * divides all PostgreSQL processes' CPU (reaped backends included) by the transactions: µs of server CPU per
 * request for each piece of enter() and the verified tenant context. Figures: docs/BENCHMARKS.md.
 */
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { readRouterCapability } from '../src/directory/capability.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { withAdmin } from '../src/shard/connection.ts'
import { routerNodes } from '../src/shard/nodes.ts'
import { namedUsage } from './router/proc.ts'
import { bootTopology, createCleanups } from './router.ts'

const run = promisify(execFile)
const postgresCpu = namedUsage(['postgres'])

/** Helpers for the pieces, made by the admin on the primary (they replicate), callable by the router's role. */
const PIECES = `
create function switchyard.bench_noop() returns void language plpgsql security definer
  set search_path = pg_catalog, pg_temp as $$ begin end $$;
create function switchyard.bench_secret() returns bytea language plpgsql security definer
  set search_path = pg_catalog, pg_temp as $$ declare a bytea; b bytea; begin
  select s.hmac_inner, s.hmac_outer into a, b from switchyard.router_secret s where s.id = 1; return a; end $$;
create function switchyard.bench_mac() returns text language plpgsql security definer
  set search_path = pg_catalog, pg_temp as $$ begin
  return switchyard.context_mac('01234567-0123-0123-0123-0123456789ab', '', '\\x0102'::bytea, '\\x0304'::bytea); end $$;
grant execute on function switchyard.bench_noop(), switchyard.bench_secret(), switchyard.bench_mac() to public;`

const variants = (tenant: string, customer: string, capability: string): [string, string][] => {
  const read = `select id, name, email from customers where tenant_id = '${tenant}' and id = '${customer}';`
  const enter = `select switchyard.enter('${tenant}', 1, false, null, '${capability}');`
  const pipeline = (...steps: string[]) => `\\startpipeline\n${steps.join('\n')}\n\\endpipeline\n`
  return [
    ['select 1', 'select 1;'],
    ['the point read without a context (RLS: no rows)', read],
    ['enter() alone', enter],
    ['pipeline: enter(); select 1', pipeline(enter, 'select 1;')],
    ['pipeline: enter(); the point read', pipeline(enter, read)],
    ['pipeline: enter(); current_tenant()', pipeline(enter, 'select switchyard.current_tenant();')],
    [
      'pipeline: enter(); current_tenant() ×3 in one statement',
      pipeline(
        enter,
        'select switchyard.current_tenant(), switchyard.current_tenant(), switchyard.current_tenant();',
      ),
    ],
    [
      "the router's read: pipeline begin; enter(); read; commit",
      pipeline('begin isolation level read committed read only not deferrable;', enter, read, 'commit;'),
    ],
    [
      'the same, one round trip per statement',
      `begin isolation level read committed read only not deferrable;\n${enter}\n${read}\ncommit;\n`,
    ],
    ['pipeline: begin; select 1; commit', pipeline('begin;', 'select 1;', 'commit;')],
    ['reset all', 'reset all;'],
    [
      'pipeline: unlisten *; close all; discard sequences',
      pipeline('unlisten *;', 'close all;', 'discard sequences;'),
    ],
    ['an empty plpgsql security definer function', 'select switchyard.bench_noop();'],
    ["enter()'s read of the router secret (plpgsql)", 'select switchyard.bench_secret();'],
    ['the context MAC (plpgsql)', 'select switchyard.bench_mac();'],
  ]
}

const cleanups = createCleanups()
try {
  const { topology, fixture, home } = await bootTopology(cleanups)
  const shard = topology.shards.find((s) => s.id === 'shard-1')
  if (!shard) throw new Error('no shard-1')
  await withAdmin(shard.primary, (sql) => sql.unsafe(PIECES))
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const capability = await withDirectory(topology, (directory) => readRouterCapability(directory))
  const node = routerNodes(topology).find((n) => n.name === 'shard-1-replica-1')
  if (!node) throw new Error('no shard-1-replica-1')
  const url = new URL(node.url)
  const env = {
    ...process.env,
    PGPASSWORD: decodeURIComponent(url.password),
    PGSSLMODE: process.env.PGSSLMODE ?? 'disable',
  }
  const script = path.join(home, 'variant.sql')
  console.log(
    `# PostgreSQL CPU per transaction on ${node.name}, pgbench -M prepared -c 8 -T 4, as ${decodeURIComponent(url.username)} (sslmode ${env.PGSSLMODE}); 2 rounds`,
  )
  console.log('| variant | tps | PostgreSQL CPU µs/tx |\n| --- | ---: | ---: |')
  for (let round = 0; round < 2; round++)
    for (const [label, sql] of variants(fixture.tenant, fixture.customer, capability)) {
      // The capability is a secret: it goes in an owner-only file, never on a command line.
      await writeFile(script, sql, { mode: 0o600 })
      const before = postgresCpu()
      const { stdout } = await run(
        'pgbench',
        [
          '-n',
          '-M',
          'prepared',
          '-c',
          '8',
          '-j',
          '1',
          '-T',
          '4',
          '-f',
          script,
          '-h',
          url.hostname,
          '-p',
          url.port,
          '-U',
          decodeURIComponent(url.username),
          url.pathname.slice(1),
        ],
        { env },
      )
      await new Promise((resolve) => setTimeout(resolve, 300))
      const after = postgresCpu()
      const transactions = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1])
      const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1])
      const cpu = before && after ? (after.cpuUs - before.cpuUs) / transactions : Number.NaN
      console.log(`| ${label} | ${tps.toFixed(0)} | ${cpu.toFixed(1)} |`)
    }
} finally {
  await cleanups.run()
}
