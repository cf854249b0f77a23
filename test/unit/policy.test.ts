import { beforeAll, describe, expect, it } from 'vitest'
import { classify, loadPolicy } from '../../src/router/policy.ts'
import { refusal } from '../policy-support.ts'

beforeAll(() => loadPolicy())

const JOIN = `select a.id, a.starts_at, c.name, s.name as service
  from appointments a
  join customers c on c.tenant_id = a.tenant_id and c.id = a.customer_id
  join services s on s.tenant_id = a.tenant_id and s.id = a.service_id
  where a.starts_at >= now() and a.status = $1
  order by a.starts_at limit 50`

describe('reads', () => {
  it.each([
    'select 1',
    'SELECT * FROM appointments WHERE tenant_id = $1 AND id = $2',
    JOIN,
    "with recent as (select * from appointments where starts_at > now() - interval '7 days') select count(*) from recent",
    'with recursive n(i) as (select 1 union all select i + 1 from n where i < 10) select sum(i) from n',
    "values (1, 'a'), (2, 'b')",
    '(select id from customers) union all (select id from staff) order by 1',
    'select id from customers intersect select customer_id from appointments except select $1::uuid',
    'table customers',
    'select * from appointments a where a.customer_id in (select id from customers where name ilike $1)',
    'select exists (select 1 from appointments where customer_id = $1)',
    "select coalesce(name, '-'), lower(email), upper(name), greatest(1, 2), nullif(name, '') from customers",
    "select jsonb_build_object('id', id), to_char(starts_at, 'YYYY-MM-DD'), date_trunc('day', starts_at) from appointments",
    'select jsonb_agg(a order by starts_at), string_agg(status, $1), array_agg(distinct status) from appointments a',
    // SQL-syntax functions become pg_catalog calls (extract, substring, btrim, position, timezone)
    "select extract(year from starts_at), substring(status from 1 for 3), trim(status), position('a' in status), starts_at at time zone 'UTC' from appointments",
    "select current_setting('app.current_tenant'), current_user, current_timestamp",
    'select now(), clock_timestamp(), random(), gen_random_uuid(), uuidv7(), statement_timestamp(), timeofday()',
    "select row_number() over (partition by customer_id order by starts_at), count(*) filter (where status = 'done') over () from appointments",
    'select * from generate_series(1, 10) g(i) cross join lateral unnest(array[1, 2]) u(x)',
    "select $1::uuid, '{}'::jsonb, cast($2 as int), 'a' collate \"C\"",
    "select pg_catalog.lower('A')",
    "select ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)",
    // the tenant schema, named; a few catalog tables; CTEs that shadow catalog names where they are in scope
    'select * from public.customers c join public.staff s on s.tenant_id = c.tenant_id',
    "select t.typname, n.nspname from pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace where t.typname = 'uuid'",
    "select name from pg_timezone_names where name like 'Europe/%'",
    'with pg_locks as (select 1 as x) select * from pg_locks',
    'with recursive a as (select * from pg_locks), pg_locks as (select 1) select * from a',
    'select pg_sleep(0.01), pg_typeof(1)',
  ])('%s is a read', (sql) => {
    expect(classify(sql)).toMatchObject({ kind: 'read', command: 'select' })
  })
})

describe('writes', () => {
  it.each([
    ['insert into customers (tenant_id, name) values ($1, $2)', 'insert'],
    ['insert into customers (tenant_id, name) values ($1, $2) returning id', 'insert'],
    [
      'insert into customers (tenant_id, id, name) values ($1, $2, $3) on conflict (tenant_id, id) do update set name = excluded.name',
      'insert',
    ],
    ['insert into customers (tenant_id, name) values ($1, $2) on conflict do nothing', 'insert'],
    ['insert into archive select * from appointments where starts_at < $1', 'insert'],
    ['update appointments set status = $1 where id = $2 returning *', 'update'],
    [
      'update appointments a set status = $1 from customers c where c.id = a.customer_id and c.name = $2',
      'update',
    ],
    ['delete from appointments where id = $1', 'delete'],
    ['delete from appointments a using customers c where c.id = a.customer_id returning a.id', 'delete'],
    [
      'with moved as (delete from appointments where starts_at < $1 returning *) insert into archive select * from moved',
      'insert',
    ],
    [
      'merge into customers c using (values ($1::uuid, $2)) v(id, name) on c.id = v.id when matched then update set name = v.name when not matched then insert (id, name) values (v.id, v.name)',
      'merge',
    ],
    // a SELECT that writes: data-modifying CTEs
    ['with d as (delete from appointments where id = $1 returning *) select * from d', 'select'],
    ["with u as (update appointments set status = 'done' returning id) select count(*) from u", 'select'],
    ['with i as (insert into customers (name) values ($1) returning id) select id from i', 'select'],
    // a SELECT that locks rows needs the primary
    ['select * from appointments where id = $1 for update', 'select'],
    ['select * from appointments where id = $1 for share', 'select'],
    ['select * from appointments where id = $1 for no key update', 'select'],
    ['select * from appointments where id = $1 for key share', 'select'],
    ['select * from appointments order by starts_at limit 1 for update skip locked', 'select'],
    ['select * from appointments where id = $1 for update nowait', 'select'],
    ['select * from (select * from appointments for update) locked', 'select'],
    // volatile functions that write, and functions the policy cannot know
    ["select nextval('appointments_id_seq')", 'select'],
    ["select setval('appointments_id_seq', 10)", 'select'],
    ["select currval('appointments_id_seq')", 'select'],
    ['select txid_current()', 'select'],
    ['select book_slot($1, $2)', 'select'],
    ["select public.lower('A')", 'select'],
  ])('%s is a write (%s)', (sql, command) => {
    expect(classify(sql)).toMatchObject({ kind: 'write', command })
  })
})

describe('statements a client may not send', () => {
  it.each([
    // the session belongs to the router
    ['set statement_timeout = 0', 'SET is not allowed: the router sets the session'],
    ["set app.current_tenant = '00000000-0000-0000-0000-000000000000'", 'SET is not allowed'],
    ['set local statement_timeout = 0', 'SET is not allowed'],
    ['set transaction isolation level serializable', 'SET is not allowed'],
    ['set role postgres', 'SET ROLE is not allowed'],
    ['set local role postgres', 'SET ROLE is not allowed'],
    ['set session authorization postgres', 'SET SESSION AUTHORIZATION is not allowed'],
    ['reset all', 'RESET is not allowed: the router sets the session'],
    ['reset app.current_tenant', 'RESET is not allowed'],
    ['reset role', 'RESET ROLE is not allowed'],
    ['show app.current_tenant', 'SHOW is not allowed'],
    ['discard all', 'DISCARD is not allowed'],
    // set_config, wherever it hides
    [
      "select set_config('app.current_tenant', $1, true)",
      'set_config() is not allowed: the tenant context is set by the router',
    ],
    ["select pg_catalog.set_config('app.current_tenant', $1, false)", 'set_config() is not allowed'],
    [
      "select * from appointments where set_config('app.current_tenant', $1, false) is not null",
      'set_config()',
    ],
    [
      "with t as (select set_config('app.current_tenant', $1, true)) select * from appointments",
      'set_config()',
    ],
    ["select * from customers, lateral (select set_config('role', 'postgres', false)) s", 'set_config()'],
    ["insert into notes (body) values (set_config('app.current_tenant', $1, true))", 'set_config()'],
    ["update customers set name = set_config('app.current_tenant', $1, true)", 'set_config()'],
    ['select setseed(0.5)', 'setseed() is not allowed'],
    // anonymous code and transaction control
    ['do $$ begin perform 1; end $$', 'DO is not allowed'],
    ['begin', 'transaction control (BEGIN) is not allowed'],
    ['start transaction read write', 'transaction control (START TRANSACTION)'],
    ['commit', 'transaction control (COMMIT)'],
    ['rollback', 'transaction control (ROLLBACK)'],
    ['savepoint a', 'transaction control (SAVEPOINT)'],
    ['release savepoint a', 'transaction control (RELEASE SAVEPOINT)'],
    ['rollback to savepoint a', 'transaction control (ROLLBACK TO SAVEPOINT)'],
    ["prepare transaction 'x'", 'transaction control (PREPARE TRANSACTION)'],
    ["commit prepared 'x'", 'transaction control (COMMIT PREPARED)'],
    // DDL and maintenance
    ['create table notes (id int)', 'DDL is not allowed (CREATE TABLE)'],
    ['alter table appointments disable row level security', 'DDL is not allowed (ALTER TABLE)'],
    ['drop table appointments', 'DDL is not allowed (DROP)'],
    ['create index on appointments (starts_at)', 'DDL is not allowed (CREATE INDEX)'],
    ['create function f() returns int language sql return 1', 'DDL is not allowed (CREATE FUNCTION)'],
    ['create policy everyone on appointments using (true)', 'DDL is not allowed (CREATE POLICY)'],
    ['create schema switchyard2', 'DDL is not allowed (CREATE SCHEMA)'],
    ['grant select on appointments to public', 'DDL is not allowed (GRANT OR REVOKE)'],
    ["comment on table appointments is 'x'", 'DDL is not allowed (COMMENT)'],
    ["alter system set fsync = 'off'", 'DDL is not allowed (ALTER SYSTEM)'],
    ['create table copy as select * from appointments', 'CREATE TABLE AS is not allowed'],
    ['select * into backup from appointments', 'SELECT INTO is not allowed: it creates a table'],
    ['truncate appointments', 'TRUNCATE is not allowed: it bypasses row-level security'],
    ['lock table appointments in access exclusive mode', 'LOCK is not allowed'],
    ['vacuum appointments', 'VACUUM is not allowed'],
    ['call book_slot($1)', 'CALL is not allowed'],
    ['prepare p as select 1', 'PREPARE is not allowed'],
    ['execute p', 'EXECUTE is not allowed'],
    ['declare c cursor for select 1', 'DECLARE is not allowed'],
    ['explain select * from appointments', 'EXPLAIN is not allowed'],
    ['explain analyze delete from appointments', 'EXPLAIN is not allowed'],
    // COPY, LISTEN/NOTIFY
    ['copy appointments to stdout', 'COPY is not allowed'],
    ['copy appointments from stdin', 'COPY is not allowed'],
    ["copy (select 1) to program 'id'", 'COPY is not allowed'],
    ['listen events', 'LISTEN is not allowed'],
    ['unlisten *', 'UNLISTEN is not allowed'],
    ["notify events, 'x'", 'NOTIFY is not allowed'],
    ["select pg_notify('events', 'x')", 'NOTIFY is not allowed'],
    // one statement per query
    ['select 1; select 2', 'only one statement per query (found 2)'],
    ['select 1; set role postgres', 'only one statement per query (found 2)'],
    ["insert into notes values (1); delete from notes; select 'x'", 'only one statement per query (found 3)'],
    ['', 'the query is empty'],
    ['  \n ', 'the query is empty'],
    ['-- nothing but a comment', 'the query is empty'],
    [';', 'the query is empty'],
    // the parser stops at NUL; PostgreSQL would get the rest
    ['select 1\0; set role postgres', 'NUL'],
    // the switchyard schema, however it is named
    ['select switchyard.enter($1, 1, true)', 'calls into the switchyard schema are not allowed'],
    ['select "switchyard".enter($1, 1, true)', 'calls into the switchyard schema are not allowed'],
    [
      'select * from appointments where switchyard.tenant_lock_key(tenant_id) > 0',
      'calls into the switchyard schema',
    ],
    ['select * from switchyard.tenant_ownership', 'references to the switchyard schema are not allowed'],
    ['table switchyard.tenant_ownership', 'references to the switchyard schema'],
    [
      'select a.* from appointments a join switchyard.tenant_ownership o using (tenant_id)',
      'switchyard schema',
    ],
    ["update switchyard.tenant_ownership set state = 'active'", 'references to the switchyard schema'],
    ['delete from switchyard.tenant_ownership', 'references to the switchyard schema'],
    ['insert into switchyard.tenant_ownership values ($1, 1, $2)', 'references to the switchyard schema'],
    ['select $1::switchyard.ownership_state', 'references to the switchyard schema'],
    ['select cast($1 as switchyard.ownership_state[])', 'references to the switchyard schema'],
    ['select 1 operator(switchyard.+) 1', 'references to the switchyard schema'],
    ["select 'a' collate switchyard.c", 'references to the switchyard schema'],
    // pg_catalog functions that change settings or sessions, take the fence's locks or read files
    ['select pg_advisory_lock(1)', "advisory locks are not allowed: the router's move fence uses them"],
    ['select pg_advisory_xact_lock_shared(1)', 'advisory locks are not allowed'],
    ['select pg_try_advisory_xact_lock(1)', 'advisory locks are not allowed'],
    ['select pg_advisory_unlock_all()', 'advisory locks are not allowed'],
    ['select pg_terminate_backend(pid) from customers', 'server administration functions are not allowed'],
    ['select pg_cancel_backend(1)', 'server administration functions are not allowed'],
    ['select pg_reload_conf()', 'server administration functions are not allowed'],
    ["select pg_read_file('/etc/passwd')", 'reading server files is not allowed'],
    ["select pg_read_binary_file('postgresql.conf')", 'reading server files is not allowed'],
    ["select * from pg_ls_dir('.')", 'reading server files is not allowed'],
    ["select lo_import('/etc/passwd')", 'large objects are not allowed'],
    ["select lo_export(1, '/tmp/x')", 'large objects are not allowed'],
    ['select lo_get(16384)', 'large objects are not allowed'],
    ["select * from dblink('host=other', 'select 1') as t(x int)", 'dblink is not allowed'],
    ["select dblink_exec('host=other', 'delete from appointments')", 'dblink is not allowed'],
    ["select pg_create_logical_replication_slot('s', 'pgoutput')", 'replication functions are not allowed'],
    // libxml2 runs XPath without checking for interrupts: no cancel or deadline stops it
    ["select xpath('//b', '<a><b/></a>'::xml)", 'XML is not allowed'],
    ["select pg_catalog.xpath_exists('//b', '<a/>'::xml)", 'XML is not allowed'],
    ["select xmlexists('//b' passing ('<a/>'::xml))", 'XML is not allowed'],
    ["select * from xmltable('/a' passing ('<a/>'::xml) columns x text path '.')", 'XML is not allowed'],
    ["select xml_is_well_formed_document('<a/>')", 'XML is not allowed'],
    ["select xmlparse(document '<a/>')", 'XML is not allowed'],
    ["select '<a/>'::xml", 'XML is not allowed'],
    ["select cast('<a/>' as pg_catalog.xml)", 'XML is not allowed'],
    ["select xmlelement(name a, 'b')", 'XML is not allowed'],
    ["select table_to_xml('customers', true, true, '')", 'XML is not allowed'],
    ["select currtid2('customers', '(0,1)'::tid)", 'currtid() is not allowed'],
    ['select txid_current_snapshot()', 'snapshots are not allowed'],
    ['select pg_current_snapshot()', 'snapshots are not allowed'],
    // functions that run SQL text the policy never sees
    [
      "select query_to_xml('select switchyard.enter($1, 1, true)', true, true, '')",
      'functions that run SQL text',
    ],
    ["select * from ts_stat('select body from notes')", 'functions that run SQL text'],
    ["select ts_rewrite('a'::tsquery, 'select 1')", 'functions that run SQL text'],
    // relations: the tenant schemas and a few catalog tables, nothing else, however they are reached
    ['select query from pg_stat_activity', 'relation pg_stat_activity is not allowed'],
    ['select * from pg_catalog.pg_locks', 'relation pg_catalog.pg_locks is not allowed'],
    ['select * from pg_prepared_statements', 'relation pg_prepared_statements is not allowed'],
    ['select (select count(*) from pg_stat_statements)', 'relation pg_stat_statements is not allowed'],
    ['select * from public.pg_stat_statements', 'relation public.pg_stat_statements is not allowed'],
    ['select * from switchyard_stats.pg_stat_statements', 'relation switchyard_stats.pg_stat_statements'],
    ['select * from information_schema.tables', 'relation information_schema.tables is not allowed'],
    ['select * from pg_temp.notes', 'relation pg_temp.notes is not allowed'],
    ['select * from "Switchyard".notes', 'relation Switchyard.notes is not allowed'],
    ['select * from customers, lateral (select * from pg_locks) l', 'relation pg_locks is not allowed'],
    ['update customers set name = l.mode from pg_locks l', 'relation pg_locks is not allowed'],
    ['delete from customers using pg_authid a', 'relation pg_authid is not allowed'],
    ['insert into pg_catalog.pg_settings select * from pg_settings', 'relation pg_catalog.pg_settings'],
    [
      "update pg_settings set setting = 'switchyard, public' where name = 'search_path'",
      'relation pg_settings is not allowed',
    ],
    // a CTE hides a catalog name only where PostgreSQL says it is in scope: not in the CTEs before it
    [
      'with a as (select * from pg_locks), pg_locks as (select 1) select * from a',
      'relation pg_locks is not allowed',
    ],
    [
      'with x as (select 1) select * from x, (with pg_locks as (select 1) select 1) s, pg_locks',
      'relation pg_locks is not allowed',
    ],
    // catalog functions outside the short list, and functions of other schemas
    ['select * from pg_stat_get_activity(null)', 'pg_stat_get_activity() is not allowed'],
    ['select pg_stat_get_backend_activity(1)', 'pg_stat_get_backend_activity() is not allowed'],
    ["select pg_total_relation_size('customers')", 'pg_total_relation_size() is not allowed'],
    ['select * from pg_lock_status()', 'pg_lock_status() is not allowed'],
    ['select pg_backend_pid()', 'pg_backend_pid() is not allowed'],
    ['select switchyard_stats.pg_stat_statements_reset()', 'pg_stat_statements_reset() is not allowed'],
    ['select extensions.anything()', 'functions in schema extensions are not allowed'],
  ])('%j is refused: %s', (sql, reason) => {
    const error = refusal(sql)
    expect(error.code).toBe('statement_not_allowed')
    expect(error.message).toContain(reason)
  })

  it('refuses a statement nested deeper than it can check, without breaking the parser', () => {
    const error = refusal(`select ${Array(50_000).fill('1').join(' + ')}`)
    expect(error).toMatchObject({
      code: 'statement_not_allowed',
      message: expect.stringContaining('nested too deeply'),
    })
    expect(classify('select 2')).toMatchObject({ kind: 'read', command: 'select' })
  })
})

describe('syntax errors', () => {
  it.each([
    ['selec 1', 'syntax error at or near "selec" at position 1', 1],
    ['select * from', 'syntax error at end of input at position 14', 14],
    ["select 'unterminated", 'unterminated quoted string at or near "\'unterminated" at position 8', 8],
    ['select (1', 'syntax error at end of input at position 10', 10],
  ])('%j is a syntax_error with the position', (sql, message, position) => {
    const error = refusal(sql)
    expect(error).toMatchObject({ code: 'syntax_error', message, details: { position } })
  })
})

describe('cache', () => {
  it('returns the same frozen object for the same text', () => {
    const first = classify(JOIN)
    expect(classify(JOIN)).toBe(first)
    expect(Object.isFrozen(first)).toBe(true)
    // another text is another entry, even when it classifies the same
    expect(classify(`${JOIN} `)).not.toBe(first)
    expect({ ...classify(`${JOIN} `), sql: JOIN }).toEqual({ ...first })
  })

  it('remembers a refusal as the same error', () => {
    const first = refusal('set role postgres')
    expect(refusal('set role postgres')).toBe(first)
    expect(refusal('selec 1')).toBe(refusal('selec 1'))
  })

  it('is bounded: a text not used for 12,000 others is parsed again, one in use stays', () => {
    const idle = classify(`${JOIN} -- idle`)
    const hot = classify(`${JOIN} -- hot`)
    for (let i = 0; i < 12_000; i++) {
      classify(`select ${i}`)
      if (i % 1000 === 0) expect(classify(`${JOIN} -- hot`)).toBe(hot)
    }
    expect(classify(`${JOIN} -- hot`)).toBe(hot)
    const again = classify(`${JOIN} -- idle`)
    expect(again).not.toBe(idle)
    expect(again).toEqual(idle)
  })
})

describe('what a cached answer would depend on', () => {
  it('takes an operator qualified outside pg_catalog for a user function, wherever it is', () => {
    for (const sql of [
      'select * from services where 1 operator(public.=~~=) 1',
      'select * from services where 1 operator(public.=~~=) any (select 1)',
      'select * from services order by id using operator(public.<<<)',
    ])
      expect(classify(sql), sql).toMatchObject({ kind: 'write', opaque: true })
    expect(classify('select * from services where 1 operator(pg_catalog.=) 1')).toMatchObject({
      kind: 'read',
      opaque: false,
    })
    expect(classify('select * from services where 1 =~~= any (select 1)').calls).toContain('=~~=')
  })

  it('reads the clock through escapes, JSON_VALUE and time zones', () => {
    for (const sql of [
      "select * from services where '{to\\day}'::date[] is not null",
      'select * from services where \'["to\\day",)\'::daterange is not null',
      "select json_value(settings, '$.d' returning date) from businesses",
      "select '10:00'::time at time zone 'Europe/Berlin' from businesses",
      "select '10:00 Europe/Berlin'::timetz from businesses",
    ])
      expect(classify(sql).volatile, sql).toBe(true)
  })

  it('takes a record built from JSON for the clock: its date fields may read now', () => {
    for (const fn of ['jsonb_populate_record(null::services, x)', 'json_to_record(x) as t(d date)'])
      expect(classify(`select * from businesses, ${fn}`).volatile, fn).toBe(true)
  })

  it('names the functions and operators it calls unqualified (a tenant schema may define them)', () => {
    expect(
      classify("select upper(name), pg_catalog.lower(name) from services where price >= 1 and name ~ 'a'")
        .calls,
    ).toEqual(['>=', 'upper', '~'])
  })

  it.each([
    ['select * from businesses where tenant_id = $1', ['businesses'], [], false, false],
    [JOIN, ['appointments', 'customers', 'services'], [], false, true],
    // A CTE's name is not a table; the tables its body reads are.
    ['with services as (select * from public.staff) select * from services', ['staff'], [], false, false],
    [
      'select * from businesses b where exists (select 1 from working_hours w where w.business_id = b.id)',
      ['businesses', 'working_hours'],
      [],
      false,
      false,
    ],
    ['select typname from pg_type', [], [], true, false],
    ["select * from appointments where start_time > 'today'", ['appointments'], [], false, true],
    ["select * from appointments where start_time > timestamptz 'now'", ['appointments'], [], false, true],
    ['select current_date, name from services', ['services'], [], false, true],
    ['select age(created_at) from services', ['services'], [], false, true],
    ['select age(updated_at, created_at) from appointments', ['appointments'], [], false, false],
    ["select current_setting('timezone'), name from services", ['services'], [], false, true],
    ['select random() from services', ['services'], [], false, true],
    ['insert into services (name) select name from staff', ['services', 'staff'], ['services'], false, false],
    ['with moved as (delete from staff returning *) select * from moved', ['staff'], ['staff'], false, false],
    ['update customers set name = $1 where id = $2', ['customers'], ['customers'], false, false],
    // Clock words anywhere a date/time parser reads them, and casts that may build one at run time.
    ["select * from services where created_at > 'today 09:00'", ['services'], [], false, true],
    ["select * from services where created_at = any('{now}'::timestamptz[])", ['services'], [], false, true],
    ["select * from services where created_at > ('to' || 'day')::date", ['services'], [], false, true],
    ['select name::date from services', ['services'], [], false, true],
    ['select cast(name as booking_day) from services', ['services'], [], false, true],
    ['select * from services tablesample system (10)', ['services'], [], false, true],
    // Literals and parameters are checked for clock words themselves; casts to clockless types are fine.
    [
      "select * from services where name in ('Snow removal', 'Knowledge', 'Nowhere')",
      ['services'],
      [],
      false,
      false,
    ],
    [
      'select price::text, id::bigint from services where created_at > $1::timestamptz',
      ['services'],
      [],
      false,
      false,
    ],
    ["select * from services where created_at > '2026-01-01'::timestamptz", ['services'], [], false, false],
  ] as const)('%s', (sql, tables, targets, catalog, volatile) => {
    expect(classify(sql)).toMatchObject({ tables, targets, catalog, volatile })
  })
})
