-- The hostile-tenant suite's attacks (test/hostile.test.ts). Tenant A sends each entry as one transaction,
-- through the router and straight at the shard as the router's role with the statement policy off; then
-- tenant B's rows must be unread and unchanged, and B's next transaction on the same connection must find
-- the session as it was. Add what you think of: the test reads this file.
--
-- An entry is a `-- category: name` line and its SQL; `-- then` separates statements of one transaction;
-- a blank line ends the entry (so no blank lines inside SQL). Placeholders: {{A}} and {{B}} are the two
-- tenants' ids, {{B_CUSTOMER}} the id of one of B's customers, {{GUESS}} 64 random hex digits (a guessed
-- capability), {{ROUTER_ROLE}} the router's role name.

-- issue 12: the reproduction (pg_settings puts switchyard on the search_path, then enter() for B)
update pg_settings set setting = 'switchyard, public' where name = 'search_path'
-- then
select enter('{{B}}'::uuid, 1, false)
-- then
select * from customers

-- issue 12: the reproduction with today's enter() and a guessed capability
update pg_settings set setting = 'switchyard, public' where name = 'search_path'
-- then
select enter('{{B}}'::uuid, 1, false, null, '{{GUESS}}')
-- then
select * from customers

-- settings: UPDATE pg_settings search_path, left for the next request
update pg_settings set setting = 'pg_catalog' where name = 'search_path'

-- settings: UPDATE pg_settings synchronous_commit off (durability of the next tenant's writes)
update pg_settings set setting = 'off' where name = 'synchronous_commit'

-- settings: UPDATE pg_settings standard_conforming_strings off (parser disagreement)
update pg_settings set setting = 'off' where name = 'standard_conforming_strings'

-- settings: UPDATE pg_settings client_encoding
update pg_settings set setting = 'LATIN1' where name = 'client_encoding'

-- settings: UPDATE pg_settings statement_timeout 0
update pg_settings set setting = '0' where name = 'statement_timeout'

-- settings: pg_catalog.pg_settings qualified
update pg_catalog.pg_settings set setting = 'German' where name = 'DateStyle'

-- settings: set_config session-level search_path
select set_config('search_path', 'switchyard, public', false)

-- settings: set_config the old tenant setting to B
select set_config('app.current_tenant', '{{B}}', false)
-- then
select * from customers

-- settings: set_config the context to B
select set_config('switchyard.context', '{{B}}/0000', true)
-- then
select * from customers where tenant_id = '{{B}}'

-- settings: pg_catalog.set_config in a WHERE
select * from customers where pg_catalog.set_config('switchyard.tenant_limits', '{}', false) is not null

-- settings: set_config in a CTE
with s as (select set_config('synchronous_commit', 'off', false)) select * from s

-- settings: SET search_path to the switchyard schema
set search_path = switchyard, public

-- settings: SET search_path to pg_catalog only
set search_path = pg_catalog

-- settings: SET search_path with pg_temp first
set search_path = pg_temp, public

-- settings: SET synchronous_commit off
set synchronous_commit = off

-- settings: SET statement_timeout 0
set statement_timeout = 0

-- settings: SET lock_timeout 1 ms
set lock_timeout = 1

-- settings: SET idle_in_transaction_session_timeout 1 ms
set idle_in_transaction_session_timeout = 1

-- settings: SET client_encoding SJIS
set client_encoding = 'SJIS'

-- settings: SET standard_conforming_strings off
set standard_conforming_strings = off

-- settings: SET DateStyle German
set datestyle = 'German'

-- settings: SET TimeZone
set time zone 'America/New_York'

-- settings: SET IntervalStyle
set intervalstyle = 'sql_standard'

-- settings: SET bytea_output escape
set bytea_output = 'escape'

-- settings: SET extra_float_digits
set extra_float_digits = -15

-- settings: SET work_mem 2GB
set work_mem = '2GB'

-- settings: SET default_transaction_isolation serializable
set default_transaction_isolation = 'serializable'

-- settings: SET SESSION CHARACTERISTICS read only
set session characteristics as transaction read only

-- settings: SET default_transaction_deferrable
set default_transaction_deferrable = on

-- settings: SET row_security off
set row_security = off
-- then
select * from customers

-- settings: SET the old tenant setting to B
set app.current_tenant = '{{B}}'
-- then
select * from customers

-- settings: SET the context to B with A's MAC
select 1
-- then
set local switchyard.context = '{{B}}/0'
-- then
select * from customers

-- settings: SET the limits to nothing (quota bypass)
set switchyard.tenant_limits = '{}'
-- then
insert into customers (tenant_id, name) values ('{{A}}', 'over quota')

-- settings: SET a placeholder the next tenant could read
set hostile.note = 'left by A'

-- settings: SET application_name
set application_name = 'pwned'

-- settings: SET plan_cache_mode
set plan_cache_mode = force_generic_plan

-- settings: SET enable_indexscan off
set enable_indexscan = off

-- settings: SET session_replication_role replica (superuser only)
set session_replication_role = replica

-- settings: SET log_statement none (superuser only)
set log_statement = 'none'

-- settings: SET seed
select setseed(0.5)

-- settings: RESET ALL then SET
reset all
-- then
set search_path = switchyard

-- settings: SET LOCAL inside the transaction
set local search_path = switchyard

-- roles: ALTER ROLE self SET (session defaults for every new router session)
alter role current_user set synchronous_commit = off

-- roles: ALTER ROLE by name SET search_path
alter role {{ROUTER_ROLE}} set search_path = switchyard

-- roles: ALTER ROLE IN DATABASE
alter role current_user in database app set datestyle = 'German'

-- roles: ALTER DATABASE SET
alter database app set search_path = switchyard

-- roles: ALTER SYSTEM
alter system set fsync = off

-- roles: give itself BYPASSRLS
alter role current_user bypassrls

-- roles: SET ROLE to a monitoring role
set role pg_read_all_stats

-- roles: SET SESSION AUTHORIZATION
set session authorization switchyard

-- roles: create a superuser
create role hostile superuser login password 'x'

-- functions: a function whose SET clause sets the tenant
create function public.hostile_f() returns int language sql set app.current_tenant = '{{B}}' as 'select 1'

-- functions: a temporary function
create function pg_temp.hostile_f() returns int language sql as 'select 1'

-- functions: a temporary table
create temp table hostile_t (x int)

-- functions: a table in the tenant schema
create table public.hostile_t (x int)

-- functions: a schema
create schema hostile

-- enter: call enter() for B with a guessed capability
select switchyard.enter('{{B}}'::uuid, 1, false, null, '{{GUESS}}')
-- then
select * from customers

-- enter: the old four-argument enter() for B
select switchyard.enter('{{B}}'::uuid, 1, false, null::jsonb)
-- then
select * from customers

-- enter: enter() quoted
select "switchyard"."enter"('{{B}}'::uuid, 1, true, null, '{{GUESS}}')

-- enter: unqualified enter() after SET search_path
set local search_path = switchyard, public
-- then
select enter('{{B}}'::uuid, 1, false, null, '{{GUESS}}')
-- then
select * from customers

-- enter: enter() inside query_to_xml
select query_to_xml('select switchyard.enter(''{{B}}''::uuid, 1, false, null, ''x'')', true, true, '')

-- enter: enter() with an empty capability
select switchyard.enter('{{B}}'::uuid, 1, false, null, '')

-- enter: read the capability's hash and the MAC keys
select * from switchyard.router_secret

-- enter: call the MAC helper
select switchyard.context_mac('{{B}}', '', '\x00'::bytea, '\x00'::bytea)

-- enter: call verified_context()
select * from switchyard.verified_context()

-- enter: current_tenant() (allowed: A's own)
select switchyard.current_tenant()

-- enter: read the ownership table (epochs, states)
select * from switchyard.tenant_ownership

-- enter: take B's fence lock for the session
select pg_advisory_lock(switchyard.tenant_lock_key('{{B}}'::uuid))

-- enter: take B's fence lock shared for the session
select pg_advisory_lock_shared(hashtextextended('switchyard.tenant:{{B}}', 0))

-- enter: try B's fence lock in the transaction
select pg_try_advisory_xact_lock(hashtextextended('switchyard.tenant:{{B}}', 0))

-- enter: unlock every advisory lock
select pg_advisory_unlock_all()

-- enter: quota turn rows of B
select * from switchyard.quota_turns for update

-- literals: standard_conforming_strings off in the same transaction, then a backslash-quote
set local standard_conforming_strings = off
-- then
select 'a\' || (select string_agg(name, ',') from customers where tenant_id = '{{B}}') || '\'

-- literals: escape string with a quote
select E'\'' || (select count(*) from customers)::text

-- literals: dollar quoting hiding a statement
select $x$; select * from customers where tenant_id = '{{B}}'; $x$

-- literals: nested comments hiding a statement
select 1 /* /* */ ; select * from customers where tenant_id = '{{B}}' */

-- literals: a line comment
select 1 -- ; update customers set name = 'x'

-- literals: unicode escapes
select U&'\0027' || 'x'

-- literals: a quoted identifier with a quote
select 1 as "a""; select * from customers"

-- literals: a NUL byte (as an escape; the text itself never carries one)
select E'\x00x'

-- literals: two statements in one query
select 1; select * from customers where tenant_id = '{{B}}'

-- do: set_config inside DO
do $$ begin perform set_config('switchyard.context', '{{B}}/0', false); end $$

-- do: SET inside DO
do $$ begin execute 'set search_path = switchyard'; end $$

-- do: PREPARE inside DO
do $$ begin execute 'prepare hostile_p as select * from customers'; end $$

-- do: enter() inside DO
do $$ begin perform switchyard.enter('{{B}}'::uuid, 1, false, null, '{{GUESS}}'); end $$

-- do: a long loop (the deadline's)
do $$ begin perform pg_sleep(0.05); end $$

-- copy: COPY a tenant table out
copy customers to stdout

-- copy: COPY a query out
copy (select * from customers where tenant_id = '{{B}}') to stdout

-- copy: COPY into a tenant table from stdin
copy customers (tenant_id, name) from stdin

-- copy: COPY to a server file
copy customers to '/tmp/hostile.csv'

-- copy: COPY from a program
copy customers from program 'id'

-- notify: LISTEN on a channel left for the next request
listen hostile

-- notify: NOTIFY
notify hostile, 'hello'

-- notify: pg_notify
select pg_notify('hostile', 'hello')

-- prepared: PREPARE a statement for the next request
prepare hostile_p as select * from customers

-- prepared: PREPARE with a name the router might use
prepare sy1 as select 1

-- prepared: DEALLOCATE ALL (the router's own statements)
deallocate all

-- prepared: EXECUTE a statement left by another request
execute hostile_p

-- prepared: read every prepared statement of the session
select name, statement from pg_prepared_statements

-- cursors: a WITH HOLD cursor left open
declare hostile_c cursor with hold for select * from customers

-- cursors: a cursor over B's rows
declare hostile_b cursor for select * from customers where tenant_id = '{{B}}'
-- then
fetch all from hostile_b

-- cursors: fetch from a cursor another request left
fetch all from hostile_c

-- cursors: CLOSE ALL
close all

-- extensions: dblink
create extension dblink

-- extensions: postgres_fdw
create extension postgres_fdw

-- extensions: file_fdw
create extension file_fdw

-- extensions: dblink_connect
select dblink_connect('host=127.0.0.1 dbname=app')

-- files: pg_read_file
select pg_read_file('postgresql.conf')

-- files: pg_read_binary_file
select pg_read_binary_file('global/pg_control')

-- files: pg_ls_dir
select * from pg_ls_dir('.')

-- files: pg_stat_file
select * from pg_stat_file('postgresql.conf')

-- files: pg_current_logfile
select pg_current_logfile()

-- large objects: lo_import a server file
select lo_import('/etc/passwd')

-- large objects: create one (a channel between tenants)
select lo_from_bytea(0, 'left by A')

-- large objects: lo_create
select lo_create(0)

-- large objects: read the metadata
select * from pg_largeobject_metadata

-- large objects: read the data
select * from pg_largeobject

-- statistics: other sessions' SQL in pg_stat_activity
select query from pg_stat_activity

-- statistics: pg_stat_activity qualified
select query from pg_catalog.pg_stat_activity where usename = current_user

-- statistics: the function behind pg_stat_activity
select * from pg_stat_get_activity(null)

-- statistics: one backend's query text
select pg_stat_get_backend_activity(s) from pg_stat_get_backend_idset() s

-- statistics: pg_stat_statements where it was
select query from public.pg_stat_statements

-- statistics: pg_stat_statements where it is now
select query from switchyard_stats.pg_stat_statements

-- statistics: pg_stat_statements unqualified
select query from pg_stat_statements

-- statistics: pg_locks (who holds which tenant's lock)
select * from pg_locks

-- statistics: pg_lock_status()
select * from pg_lock_status()

-- statistics: pg_cursors
select * from pg_cursors

-- statistics: pg_prepared_xacts
select * from pg_prepared_xacts

-- statistics: table statistics (every tenant's volume)
select relname, n_live_tup, n_tup_ins from pg_stat_user_tables

-- statistics: live tuples of a table
select pg_stat_get_live_tuples('customers'::regclass)

-- statistics: sizes of tenant tables
select pg_total_relation_size('customers'), pg_relation_size('appointments')

-- statistics: database size
select pg_database_size(current_database())

-- statistics: column statistics of tenant tables
select * from pg_stats where tablename = 'customers'

-- statistics: publications of moves in progress (row filters name tenants)
select * from pg_publication_tables

-- statistics: pg_publication_rel row filters
select prqual from pg_publication_rel

-- statistics: replication slots
select * from pg_replication_slots

-- statistics: blocking pids
select pg_blocking_pids(1)

-- statistics: commit status of transactions
select pg_xact_status(pg_current_xact_id())

-- statistics: the settings of this session (allowed: its own)
select name, setting from pg_settings where name in ('search_path', 'synchronous_commit')

-- signals: cancel every other router session
select pg_cancel_backend(pid) from pg_stat_activity where pid <> pg_backend_pid()

-- signals: terminate every other router session
select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid()

-- signals: terminate a guessed backend
select pg_terminate_backend(s) from generate_series(1, 100000, 997) s

-- signals: reload the configuration
select pg_reload_conf()

-- writes: a data-modifying CTE deleting B's rows
with d as (delete from customers where tenant_id = '{{B}}' returning *) select * from d

-- writes: a data-modifying CTE updating B's rows
with u as (update customers set name = 'pwned' where tenant_id = '{{B}}' returning *) select * from u

-- writes: a data-modifying CTE inserting a row for B
with i as (insert into customers (tenant_id, name) values ('{{B}}', 'planted') returning *) select * from i

-- writes: UPDATE by B's row id
update customers set name = 'pwned' where id = '{{B_CUSTOMER}}'

-- writes: DELETE by B's row id
delete from customers where id = '{{B_CUSTOMER}}'

-- writes: DELETE everything not A's
delete from customers where tenant_id <> '{{A}}'

-- writes: move A's row into B
update customers set tenant_id = '{{B}}' where tenant_id = '{{A}}'

-- writes: INSERT a row for B
insert into customers (tenant_id, name) values ('{{B}}', 'planted')

-- writes: upsert on B's key
insert into customers (tenant_id, id, name) values ('{{B}}', '{{B_CUSTOMER}}', 'pwned') on conflict (tenant_id, id) do update set name = excluded.name

-- writes: MERGE into B's rows
merge into customers c using (select '{{B_CUSTOMER}}'::uuid as id) s on c.id = s.id when matched then update set name = 'pwned' when not matched then insert (tenant_id, name) values ('{{B}}', 'planted')

-- writes: TRUNCATE
truncate customers

-- writes: DELETE with a join to B's appointments
delete from customers c using appointments a where a.customer_id = c.id and a.tenant_id = '{{B}}'

-- reads: B's rows by tenant id
select * from customers where tenant_id = '{{B}}'

-- reads: B's row by id
select * from customers where id = '{{B_CUSTOMER}}'

-- reads: everything
select * from customers

-- reads: TABLE
table businesses

-- reads: ONLY
select * from only appointments

-- reads: a join across tenants
select c.name, a.start_time from appointments a join customers c on c.id = a.customer_id where a.tenant_id = '{{B}}'

-- reads: system columns and a sample
select ctid, xmin, * from customers tablesample system (100)

-- reads: a subquery for B's name
select (select name from businesses where tenant_id = '{{B}}' limit 1)

-- reads: row_to_json of B's rows
select row_to_json(b) from businesses b where b.tenant_id = '{{B}}'

-- reads: query_to_xml of a tenant table
select query_to_xml('select * from businesses', true, true, '')

-- reads: table_to_xml
select table_to_xml('businesses', true, true, '')

-- reads: a leaky cast evaluated on every row (RLS comes first)
select * from businesses where cast(name as int) = 1

-- reads: a division by zero that would leak through the error
select * from businesses where 1 / (length(name) - length(name)) = 1 and tenant_id = '{{B}}'

-- reads: a regex on B's name in an error
select * from businesses where name ~ ('(' || repeat('a', 1) || '[') and tenant_id = '{{B}}'

-- reads: the counts of other tenants through statistics of an index
select * from pg_class where relname = 'customers'

-- catalog: pg_authid passwords
select rolname, rolpassword from pg_authid

-- catalog: pg_shadow
select * from pg_shadow

-- catalog: pg_user_mappings
select * from pg_user_mappings

-- catalog: pg_hba_file_rules
select * from pg_hba_file_rules

-- catalog: pg_file_settings
select * from pg_file_settings

-- catalog: data_directory
select current_setting('data_directory')

-- catalog: role settings
select * from pg_db_role_setting

-- catalog: information_schema
select * from information_schema.role_table_grants

-- ddl: disable row level security
alter table customers disable row level security

-- ddl: no force row level security
alter table customers no force row level security

-- ddl: drop the policy
drop policy tenant_isolation on customers

-- ddl: an open policy
create policy everyone on customers using (true)

-- ddl: grant to public
grant select on customers to public

-- ddl: drop the quota trigger
drop trigger customers_quota on customers

-- ddl: add a column
alter table customers add column hostile int

-- ddl: an index
create index on customers (name)

-- ddl: comment
comment on table customers is 'pwned'

-- maintenance: lock a tenant table for everyone
lock table customers in access exclusive mode

-- maintenance: vacuum
vacuum customers

-- maintenance: analyze
analyze customers

-- maintenance: reindex
reindex table customers

-- maintenance: checkpoint
checkpoint

-- maintenance: load a library
load 'auto_explain'

-- maintenance: discard everything
discard all

-- maintenance: discard plans
discard plans

-- transactions: COMMIT in the middle, then write outside the router's transaction
commit
-- then
insert into customers (tenant_id, name) values ('{{B}}', 'planted')

-- transactions: ROLLBACK then read without a context
rollback
-- then
select * from customers

-- transactions: BEGIN a transaction of its own
begin
-- then
select * from customers

-- transactions: SAVEPOINT and ROLLBACK TO
savepoint s
-- then
rollback to savepoint s

-- transactions: PREPARE TRANSACTION (holds locks forever)
prepare transaction 'hostile'

-- transactions: SET TRANSACTION SNAPSHOT
set transaction snapshot '00000003-00000001-1'

-- transactions: export a snapshot
select pg_export_snapshot()

-- transactions: SET TRANSACTION isolation after a statement
set transaction isolation level serializable

-- replication: a logical slot would stream every tenant's changes
select pg_create_logical_replication_slot('hostile', 'pgoutput')

-- replication: peek at a slot
select * from pg_logical_slot_peek_changes('switchyard_move', null, null)

-- replication: a publication of every table
create publication hostile for all tables

-- replication: a subscription
create subscription hostile connection 'host=127.0.0.1' publication p

-- sequences: lastval of the session (another request's)
select lastval()

-- sequences: currval
select currval('hostile_seq')

-- misc: explain analyze a delete of B's rows
explain analyze delete from customers where tenant_id = '{{B}}'

-- misc: explain (plans show statistics)
explain select * from customers

-- misc: SHOW a setting
show search_path

-- misc: the current query text
select current_query()

-- misc: the backend pid
select pg_backend_pid()

-- misc: a wait (allowed; bounded by the deadline)
select pg_sleep(0.01)

-- misc: CALL a procedure
call public.hostile_proc()

-- misc: txid_current
select txid_current()

-- review: SET seed with the statement (GUC_NO_RESET_ALL, hidden from pg_settings; see test/hostile.test.ts)
set seed = 0.5
-- then
select 1 / 0

-- review: PREPARE then fail (a failed transaction is never marked tainted)
prepare hostile_failed as select * from customers
-- then
select 1 / 0

-- review: A's own context copied into a session-level setting for the next transaction
do $$ begin execute format('set switchyard.context = %L', current_setting('switchyard.context')); end $$

-- review: A's own context copied into a session-level setting, then a failure
do $$ begin execute format('set switchyard.context = %L', current_setting('switchyard.context')); end $$
-- then
select 1 / 0

-- review: MERGE WHEN NOT MATCHED BY SOURCE (every target row the policy lets it see)
merge into customers c using (select 1 as x) s on false when not matched by source then update set name = 'pwned'

-- review: MERGE WHEN NOT MATCHED BY SOURCE THEN DELETE
merge into customers c using (select 1 as x) s on false when not matched by source then delete

-- review: currtid2 follows another tenant's update chain (a TID side channel; see test/hostile-bounds.test.ts)
select currtid2('customers', t::tid) from (values ('(0,1)'), ('(0,2)'), ('(0,3)')) v(t)

-- review: currtid2 qualified, on B's customer's row (revoked from PUBLIC: shard migration 0006)
select pg_catalog.currtid2('public.customers', ctid) from customers where id = '{{B_CUSTOMER}}'

-- review: XPath that libxml2 evaluates without checking for a cancel (the review's on 100 elements, not 1000)
select xpath('count(//b[count(//b[count(//b)>0])>0])', ('<a>' || repeat('<b/>', 100) || '</a>')::xml)

-- review: XPath with namespaces (the other overload)
select xpath('count(//b[count(//b)>0])', ('<a>' || repeat('<b/>', 100) || '</a>')::xml, array[array['n', 'urn:n']])

-- review: xpath_exists over the same expression
select xpath_exists('//b[count(//b[count(//b)>0])>0]', ('<a>' || repeat('<b/>', 100) || '</a>')::xml)

-- review: XMLEXISTS, the syntax (a call of xmlexists())
select xmlexists('//b[count(//b[count(//b)>0])>0]' passing by ref (('<a>' || repeat('<b/>', 100) || '</a>')::xml))

-- review: XPath in a WHERE over B's rows
select id from customers where xpath_exists('/a', '<a/>'::xml) and tenant_id = '{{B}}'

-- review: XMLTABLE with a quadratic row expression (an executor node, not revocable: the policy refuses it; 100 elements)
select * from xmltable('//b[count(//b)>0]' passing (('<a>' || repeat('<b/>', 100) || '</a>')::xml) columns n int path 'count(//b)')

-- review: schema_to_xml names the switchyard schema in a string
select schema_to_xml('switchyard', true, true, '')

-- review: database_to_xml runs a query per readable table
select database_to_xml(true, true, '')

-- review: table_to_xml of the idempotency keys by name
select table_to_xml('switchyard.idempotency_keys', true, true, '')

-- review: to_regclass and regclass casts of the secret table
select to_regclass('switchyard.router_secret'), 'switchyard.router_secret'::regclass::oid

-- review: pg_input_error_info on a switchyard relation name
select * from pg_input_error_info('switchyard.router_secret', 'regclass')

-- review: the in-progress transactions of every session (txid_current_snapshot)
select txid_current_snapshot()

-- review: FOR UPDATE SKIP LOCKED over every tenant's rows
select * from customers for update skip locked

-- review: FOR KEY SHARE on B's business through a foreign key insert
insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time) select '{{A}}', b.id, s.id, c.id, now(), now() + interval '1 hour' from businesses b, services s, customers c where b.tenant_id = '{{B}}' limit 1

-- review: a leakproof equality on B's marker column (evaluated before RLS is allowed, cannot raise)
select count(*) from customers where email = 'x@example.com' or name = 'B'

-- review: an error on B's value from a non-leakproof cast in a join condition
select * from customers a join customers b on b.name::int = a.id::text::int

-- review: a recursive CTE whose name shadows a catalog relation
with recursive pg_authid(x) as (select 1 union all select x + 1 from pg_authid where x < 3) select * from pg_authid

-- review: a CTE name visible only inside its own WITH, used outside it
select * from (with pg_shadow as (select 1) select * from pg_shadow) a, pg_shadow

-- review: a unicode-escaped identifier naming a revoked view
select * from U&"pg_stat_\0061ctivity"

-- review: a unicode-escaped schema for enter()
select U&"\0073witchyard".enter('{{B}}'::uuid, 1, false, null, '{{GUESS}}')

-- review: ROWS FROM with a revoked function
select * from rows from (generate_series(1, 1), pg_stat_get_activity(null))

-- review: XMLTABLE over a query text (XMLTABLE runs no SQL)
select * from xmltable('/a' passing '<a>select * from customers</a>'::xml columns x text path '.')

-- review: a set-returning function in a lateral join to B's rows
select c.name from generate_series(1, 1) g, lateral (select name from customers where tenant_id = '{{B}}') c

-- review: an upsert whose conflict target is B's primary key, with DO NOTHING (an existence oracle)
insert into customers (tenant_id, id, name) values ('{{A}}', '{{B_CUSTOMER}}', 'probe') on conflict do nothing returning id

-- review: a window over every tenant's rows
select count(*) over () from customers

-- review: SAVEPOINT, LISTEN, then ROLLBACK TO (a listen that outlives its subtransaction)
savepoint s
-- then
listen hostile_sub
-- then
rollback to savepoint s
