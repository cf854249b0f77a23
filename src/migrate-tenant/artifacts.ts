import type { Sql } from '../shard/connection.ts'
import { parseLsn } from '../shard/lsn.ts'
import type { TenantTable } from '../shard/tables.ts'

/**
 * Everything a move creates on a shard carries its id (invariant 5): the publication on the source,
 * the subscription on the target and the subscription's slot on the source share one name, so a
 * leftover names the move that left it.
 */
export const artifactName = (moveId: string) => `sy_move_${moveId.replaceAll('-', '')}`

/** Recognises artifact names (and recovers the move id) for the doctor's leftover report. */
export function moveIdOf(name: string): string | undefined {
  const hex = /^sy_move_([0-9a-f]{32})$/.exec(name)?.[1]
  if (!hex) return undefined
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * A publication of the tenant's rows only: `tenant_id = …` filters every tenant table. Row filters do
 * not apply to TRUNCATE, so it is not published: a TRUNCATE on the source during a move would otherwise
 * empty the table on the target for every tenant. A partitioned table is published as its root
 * (`publish_via_partition_root`): its row filter applies to every partition's changes, the initial copy
 * reads the root, and the target routes each row to its own partition. DDL takes no parameters, so the
 * tenant id is inlined: it is checked to be a UUID (hex and dashes) first.
 */
export async function createPublication(sql: Sql, name: string, tenant: string, tables: TenantTable[]) {
  if (!UUID.test(tenant)) throw new Error(`not a tenant id: ${tenant}`)
  const [exists] = await sql`select 1 from pg_publication where pubname = ${name}`
  if (exists) return
  const list = tables.map((t) => `${t.name} where (tenant_id = '${tenant}'::uuid)`).join(', ')
  await sql.unsafe(
    `create publication ${name} for table ${list}
     with (publish = 'insert, update, delete', publish_via_partition_root = true)`,
  )
}

export async function dropPublication(sql: Sql, name: string) {
  await sql.unsafe(`drop publication if exists ${name}`)
}

/**
 * The subscription on the target: copies the tenant's rows, then streams its changes. It runs as its
 * owner (a superuser here) because the tenant tables force RLS; apply commits synchronously so the
 * position it reports back means "applied and durable"; an apply error disables it instead of
 * retrying forever. A slot left by a crash between creating the slot and committing the subscription
 * is dropped first, so CREATE can take the name again.
 */
export async function createSubscription(target: Sql, source: Sql, name: string, sourceUrl: string) {
  const [exists] = await target`select 1 from pg_subscription where subname = ${name}`
  if (exists) return
  await dropSlot(source, name)
  await target.unsafe(
    `create subscription ${name} connection ${literal(sourceUrl)} publication ${name}
     with (copy_data = true, create_slot = true, slot_name = '${name}', synchronous_commit = 'on',
           run_as_owner = true, disable_on_error = true)`,
  )
}

/**
 * Drops the subscription and, with it, its slot on the source. That needs the source to answer: when
 * it does not, this fails and the move stays where it is, rather than leave an orphan slot that would
 * hold the source's WAL forever.
 */
export async function dropSubscription(target: Sql, name: string) {
  const [exists] = await target`select 1 from pg_subscription where subname = ${name}`
  if (!exists) return
  await target.unsafe(`alter subscription ${name} disable`)
  await target.unsafe(`drop subscription ${name}`)
}

/** Which subscription a move's table-sync slots belong to: its oid and its server's system identifier. */
export interface SubscriptionId {
  oid: number
  systemId: string
}

/**
 * The move's slots on the source: its own, and the temporary table-sync slots a crash during the copy
 * can leave, named `pg_<subscription oid>_sync_<table oid>_<subscriber system id>`. Both parts are
 * matched: two targets built alike may well give their subscriptions the same oid, and another move's
 * copy must not lose its slot.
 */
export async function moveSlots(source: Sql, name: string, subscription: SubscriptionId | null) {
  const sync = subscription ? `pg\\_${subscription.oid}\\_sync\\_%\\_${subscription.systemId}` : null
  const rows = await source<{ slot_name: string; active_pid: number | null }[]>`
    select slot_name, active_pid from pg_replication_slots
    where slot_name = ${name} or (${sync}::text is not null and slot_name like ${sync})`
  return rows
}

export async function systemIdentifier(sql: Sql): Promise<string> {
  const [row] = await sql<{ id: string }[]>`select system_identifier::text as id from pg_control_system()`
  if (!row) throw new Error('pg_control_system() answered nothing')
  return row.id
}

/** Stops the subscription's apply worker (the target is about to take the tenant's writes itself). */
export async function disableSubscription(target: Sql, name: string) {
  const [exists] = await target`select 1 from pg_subscription where subname = ${name} and subenabled`
  if (exists) await target.unsafe(`alter subscription ${name} disable`)
}

export async function enableSubscription(target: Sql, name: string) {
  const [exists] = await target`select 1 from pg_subscription where subname = ${name} and not subenabled`
  if (exists) await target.unsafe(`alter subscription ${name} enable`)
}

/** Drops a slot, ending the WAL sender that holds it if there is one (the subscription is gone). */
export async function dropSlot(source: Sql, slot: string) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const [row] = await source<{ active_pid: number | null }[]>`
      select active_pid from pg_replication_slots where slot_name = ${slot}`
    if (!row) return
    if (row.active_pid !== null) {
      await source`select pg_terminate_backend(${row.active_pid})`
      await new Promise((resolve) => setTimeout(resolve, 50))
      continue
    }
    await source`select pg_drop_replication_slot(${slot})`.catch((error: { code?: string }) => {
      // 42704: dropped meanwhile; 55006: taken again by a sender: the loop looks again.
      if (error.code !== '42704' && error.code !== '55006') throw error
    })
  }
  throw new Error(`replication slot ${slot} stayed active: it could not be dropped`)
}

export async function dropMoveSlots(source: Sql, name: string, subscription: SubscriptionId | null) {
  for (const slot of await moveSlots(source, name, subscription)) await dropSlot(source, slot.slot_name)
}

export interface SubscriptionState {
  exists: boolean
  oid: number | null
  enabled: boolean
  /** Tables not yet copied and in sync (pg_subscription_rel state other than 'r'). */
  tablesPending: number
}

export async function subscriptionState(target: Sql, name: string): Promise<SubscriptionState> {
  const [row] = await target<{ oid: number; enabled: boolean; pending: number }[]>`
    select s.oid::int as oid, s.subenabled as enabled,
           (select count(*)::int from pg_subscription_rel r where r.srsubid = s.oid and r.srsubstate <> 'r') as pending
    from pg_subscription s where s.subname = ${name}`
  if (!row) return { exists: false, oid: null, enabled: false, tablesPending: 0 }
  return { exists: true, oid: row.oid, enabled: row.enabled, tablesPending: row.pending }
}

/**
 * How far the target has applied the source's WAL: the slot's confirmed flush position (the
 * subscription reports it once a change is applied and durable), and the source's current position.
 */
export async function slotProgress(
  source: Sql,
  name: string,
): Promise<{ confirmed: bigint; current: bigint }> {
  const [row] = await source<{ confirmed: string | null; current: string }[]>`
    select (select confirmed_flush_lsn::text from pg_replication_slots where slot_name = ${name}) as confirmed,
           pg_current_wal_lsn()::text as current`
  if (!row) throw new Error('the source answered nothing')
  if (row.confirmed === null) throw new Error(`replication slot ${name} is missing on the source`)
  return { confirmed: parseLsn(row.confirmed), current: parseLsn(row.current) }
}

const literal = (text: string) => `'${text.replaceAll("'", "''")}'`
