import type postgres from 'postgres'
import { SwitchyardError } from '../errors.ts'
import type { Queries, Sql } from './connection.ts'
import { quoteIdent, quoteLiteral } from './migrate.ts'

/**
 * The seed's monthly partitions (§1: `appointments` by month once past 500 tenants), kept on a shard.
 * A table is kept by month when it is range-partitioned on one column of a date or time type; its
 * partitions are named `<table>_pYYYY_MM` and cover one calendar month in UTC. Each new partition gets
 * the parent's RLS (enabled, forced, the same policies) and owner, so a tenant's SQL that names a
 * partition directly sees no more than through the parent (invariant 3), and `doctor` finds it like
 * every other tenant table.
 */
export interface PartitionedTable {
  /** As format('%I.%I') writes it, ready for SQL text. */
  name: string
  schema: string
  table: string
  /** `pg_get_partkeydef`: `RANGE (start_time)`. */
  key: string
  /** The partition key's column when it is one column (quoted), else null. */
  column: string | null
  /** Range-partitioned on one date or time column: kept by month. */
  monthly: boolean
  partitions: Partition[]
}

export interface Partition {
  /** Schema-qualified and quoted. */
  name: string
  /** As `pg_get_expr` writes it with TimeZone UTC: `FOR VALUES FROM (…) TO (…)` or `DEFAULT`. */
  bound: string
  /** For a month's partition: its first day (YYYY-MM-01); null for others. */
  month: string | null
  /** Rows in a DEFAULT partition, when the layout counted them (doctor); null otherwise. */
  rows: number | null
  /** A monthly table's DEFAULT partition: its rows by the month (YYYY-MM-01, UTC) they fall in. */
  rowMonths: { month: string; rows: number }[]
}

/** What `ensure` did to one table, for the CLI's report. */
export interface EnsureOutcome {
  table: string
  created: string[]
  dropped: string[]
  /** Months it could not create, and why (a default partition holding rows there, another's bounds). */
  skipped: { month: string; reason: string }[]
}

export interface EnsureOptions {
  /** Months after the current one that must have a partition (the current one always does). */
  monthsAhead: number
  /** Keep this many months before the current one and detach and drop older month partitions; null: keep all. */
  retainMonths: number | null
  /** Only these tables (`appointments` or `public.appointments`, as sameTable() matches); all when absent. */
  tables?: string[] | undefined
  /** The clock, for tests. */
  now?: Date
}

/** `name` (as format('%I.%I') writes it) is the table `wanted` names, with or without its schema. */
export const sameTable = (name: string, wanted: string) =>
  name === wanted || name.slice(name.indexOf('.') + 1) === wanted

const TIME_TYPES = ['date', 'timestamp without time zone', 'timestamp with time zone']

/** Every partitioned table in the tenant schemas (not partitions themselves), with its partitions. */
export async function partitionLayout(
  sql: Sql,
  schemas: string[],
  /** Count the DEFAULT partitions' rows (by month for monthly tables): a scan of each, for `doctor`. */
  countDefault = false,
): Promise<PartitionedTable[]> {
  return sql.begin(async (tx) => {
    await tx`set local timezone = 'UTC'`
    const parents = await tx<(Omit<PartitionedTable, 'partitions'> & { oid: number })[]>`
      select c.oid::int as oid, format('%I.%I', n.nspname, c.relname) as name, n.nspname as schema,
             c.relname as table, pg_get_partkeydef(c.oid) as key,
             case when pt.partnatts = 1 and a.attname is not null then quote_ident(a.attname) end as column,
             coalesce(pt.partstrat = 'r' and pt.partnatts = 1
                      and format_type(a.atttypid, null) = any(${TIME_TYPES}), false) as monthly
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join pg_partitioned_table pt on pt.partrelid = c.oid
      left join pg_attribute a on a.attrelid = c.oid and a.attnum = pt.partattrs[0]
      where c.relkind = 'p' and not c.relispartition and n.nspname = any(${schemas})
      order by 2`
    const tables: PartitionedTable[] = []
    for (const { oid, ...parent } of parents)
      tables.push({
        ...parent,
        partitions: await partitionsOf(
          tx,
          oid,
          countDefault ? { monthOf: parent.monthly ? parent.column : null } : null,
        ),
      })
    return tables
  })
}

/** `monthOf`: a monthly table's key column, to count its DEFAULT partition's rows by month. */
async function partitionsOf(
  tx: Queries,
  parent: number,
  counting: { monthOf: string | null } | null,
): Promise<Partition[]> {
  const rows = await tx<{ name: string; bound: string; is_default: boolean }[]>`
    select format('%I.%I', n.nspname, c.relname) as name, pg_get_expr(c.relpartbound, c.oid) as bound,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' as is_default
    from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace
    where i.inhparent = ${parent}
    order by 2`
  const partitions: Partition[] = []
  for (const row of rows) {
    let count: number | null = null
    let rowMonths: Partition['rowMonths'] = []
    if (row.is_default && counting) {
      const { monthOf } = counting
      const [counted] = await tx.unsafe<{ n: number }[]>(`select count(*)::int as n from ${row.name}`)
      count = counted?.n ?? 0
      if (monthOf && count > 0)
        rowMonths = await tx.unsafe<Partition['rowMonths']>(
          `select to_char(date_trunc('month', ${monthOf}), 'YYYY-MM-01') as month, count(*)::int as rows
           from ${row.name} where ${monthOf} >= '0001-01-01' and isfinite(${monthOf}) group by 1 order by 1`,
        )
    }
    partitions.push({
      name: row.name,
      bound: row.bound,
      month: monthOfBound(row.bound),
      rows: count,
      rowMonths,
    })
  }
  return partitions
}

/** The month a bound covers exactly (FROM the first of a month TO the first of the next), or null. */
export function monthOfBound(bound: string): string | null {
  const match =
    /^FOR VALUES FROM \('(\d{4})-(\d{2})-01(?: 00:00:00(?:\+00)?)?'\) TO \('(\d{4})-(\d{2})-01(?: 00:00:00(?:\+00)?)?'\)$/.exec(
      bound,
    )
  if (!match) return null
  const [, year, month, toYear, toMonth] = match
  const from = `${year}-${month}-01`
  return nextMonth(from) === `${toYear}-${toMonth}-01` ? from : null
}

/** The first day of the month `offset` months after the one `day` is in (YYYY-MM-01, UTC). */
export function monthStart(day: Date, offset = 0): string {
  const date = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth() + offset, 1))
  return date.toISOString().slice(0, 10)
}

const nextMonth = (first: string) => monthStart(new Date(`${first}T00:00:00Z`), 1)

/** `appointments_p2026_12` for the month starting 2026-12-01. */
export const partitionName = (table: string, month: string) =>
  `${table}_p${month.slice(0, 4)}_${month.slice(5, 7)}`

/**
 * Creates the partitions of the current month and `monthsAhead` after it that a monthly table lacks,
 * and with `retainMonths` detaches and drops month partitions older than that. Idempotent, and safe to
 * run from several places at once: each table is done in one transaction under an advisory lock, so a
 * second run waits, then finds the partitions made. A month already covered by another partition, or
 * one whose rows sit in the DEFAULT partition, is skipped and said so.
 */
export async function ensurePartitions(
  sql: Sql,
  schemas: string[],
  options: EnsureOptions,
): Promise<EnsureOutcome[]> {
  const now = options.now ?? new Date()
  const outcomes: EnsureOutcome[] = []
  const monthly = (await partitionLayout(sql, schemas)).filter(
    (table) =>
      table.monthly && (!options.tables || options.tables.some((wanted) => sameTable(table.name, wanted))),
  )
  for (const found of monthly) {
    const outcome: EnsureOutcome = { table: found.name, created: [], dropped: [], skipped: [] }
    for (let offset = 0; offset <= options.monthsAhead; offset++) {
      const month = monthStart(now, offset)
      if (found.partitions.some((partition) => partition.month === month)) continue
      await underLock(sql, found, (tx, table) => ensureMonth(tx, table, month, outcome))
    }
    const retain = options.retainMonths
    if (retain !== null)
      await underLock(sql, found, (tx, table) => dropOlder(tx, table, monthStart(now, -retain), outcome))
    outcomes.push(outcome)
  }
  return outcomes
}

/**
 * Adding or dropping a partition locks the whole table (ACCESS EXCLUSIVE on the parent): every tenant's
 * reads and writes of it wait meanwhile. So each month is its own transaction, which waits at most
 * LOCK_WAIT for its locks (a lock request queued behind a long reader, a move's copy, would hold up
 * every query after it) and runs at most LOCKED_WORK (adding a month scans the DEFAULT partition): past
 * either it gives up, says so, and the next run tries again.
 */
const LOCK_WAIT = '2s'
const LOCKED_WORK = '5s'

/** `work` in one transaction, under the table's advisory lock (so runs take turns) and the bounds above. */
async function underLock(
  sql: Sql,
  found: PartitionedTable,
  work: (tx: postgres.TransactionSql, table: PartitionedTable) => Promise<void>,
) {
  await sql.begin(async (tx) => {
    await tx`set local timezone = 'UTC'`
    await tx`select pg_advisory_xact_lock(hashtext('switchyard.partitions'), hashtext(${found.name}))`
    await tx.unsafe(`set local lock_timeout = '${LOCK_WAIT}'`)
    await tx.unsafe(`set local statement_timeout = '${LOCKED_WORK}'`)
    // Read again under the lock: another run may have made them meanwhile.
    const [oid] = await tx<{ oid: number }[]>`select ${found.name}::regclass::oid::int as oid`
    await work(tx, { ...found, partitions: await partitionsOf(tx, oid?.oid ?? 0, null) })
  })
}

/** Why a month could not be made or dropped this time, for the errors that are not the code's fault. */
function skipReason(error: unknown): string | undefined {
  const { code, message } = error as { code?: string; message?: string }
  switch (code) {
    case '42P17':
    case '42P07':
      return `another partition covers part of it (${message})`
    case '23514':
      return 'the DEFAULT partition holds rows of this month that could not be moved out'
    case '55P03':
      return `the table stayed busy for ${LOCK_WAIT}: tried again at the next run`
    case '40P01':
      return 'it deadlocked with a query naming a partition: tried again at the next run'
    case '57014':
      return `it would have locked the table for over ${LOCKED_WORK} (a large DEFAULT partition): tried again at the next run`
    case '42501':
      return 'moving rows out of the DEFAULT partition needs a superuser (the admin URL of the shard)'
    default:
      return undefined
  }
}

async function ensureMonth(
  tx: postgres.TransactionSql,
  table: PartitionedTable,
  month: string,
  outcome: EnsureOutcome,
) {
  if (table.partitions.some((partition) => partition.month === month)) return
  // As format('%I.%I') writes it, like every table name the project reports.
  const [named] = await tx<{ name: string }[]>`
    select format('%I.%I', ${table.schema}::text, ${partitionName(table.table, month)}::text) as name`
  const name = named?.name as string
  const bound = `for values from (${quoteLiteral(month)}) to (${quoteLiteral(nextMonth(month))})`
  const parked = await defaultHolding(tx, table, month)
  try {
    // A savepoint: a month that cannot be made (it overlaps another partition) is reported, and the
    // others still are.
    await tx.savepoint((inner) =>
      parked
        ? outOfDefault(inner, table, parked.name, month, () => createPartition(inner, table, name, bound))
        : createPartition(inner, table, name, bound),
    )
    outcome.created.push(name)
  } catch (error) {
    const reason = skipReason(error)
    if (reason === undefined) throw error
    outcome.skipped.push({ month, reason })
  }
}

/** The DEFAULT partition, when it holds rows of `month` (PostgreSQL would refuse to make the month). */
async function defaultHolding(
  tx: Queries,
  table: PartitionedTable,
  month: string,
): Promise<Partition | undefined> {
  const parked = table.partitions.find((partition) => partition.bound === 'DEFAULT')
  if (!parked || !table.column) return undefined
  const [found] = await tx.unsafe<{ any: boolean }[]>(
    `select exists (select from ${parked.name} where ${table.column} >= $1 and ${table.column} < $2) as any`,
    [month, nextMonth(month)],
  )
  return found?.any ? parked : undefined
}

/**
 * Creates a month's partition while the DEFAULT partition holds rows of that month (a booking made
 * before the month was kept ahead): PostgreSQL refuses to, so the rows are taken out, the partition
 * made, and the rows put back through the parent, all in the caller's transaction: no reader sees them
 * gone. The table is locked meanwhile, as it is for any new partition (PostgreSQL takes an ACCESS
 * EXCLUSIVE lock on the parent to add one), for at most LOCKED_WORK per statement. The rows go back as
 * replication would put them (session_replication_role = replica: no triggers, as quotas and foreign keys
 * were checked when they were written), which takes a superuser, as do reading past RLS (row_security
 * off fails rather than filters) and a temporary table: otherwise the month is skipped, said why.
 */
async function outOfDefault(
  tx: Queries,
  table: PartitionedTable,
  parked: string,
  month: string,
  create: () => Promise<void>,
) {
  const column = table.column as string
  const range = `${column} >= ${quoteLiteral(month)} and ${column} < ${quoteLiteral(nextMonth(month))}`
  await tx`set local row_security = off`
  await tx`set local session_replication_role = replica`
  // The parent first, as every write through it locks them: the other way round, a write holding the
  // parent and waiting for the DEFAULT partition would deadlock with the create below.
  await tx.unsafe(`lock table only ${table.name} in access exclusive mode`)
  await tx.unsafe(`lock table ${parked} in exclusive mode`)
  // Stored columns only: generated ones are computed again on the way back, identities kept.
  const [stored] = await tx<{ columns: string }[]>`
    select string_agg(quote_ident(attname), ', ' order by attnum) as columns from pg_attribute
    where attrelid = ${table.name}::regclass and attnum > 0 and not attisdropped and attgenerated = ''`
  const columns = stored?.columns as string
  await tx.unsafe(
    `create temporary table switchyard_parked on commit drop as select ${columns} from ${parked} where ${range}`,
  )
  await tx.unsafe(`delete from ${parked} where ${range}`)
  await create()
  await tx.unsafe(
    `insert into ${table.name} (${columns}) overriding system value select ${columns} from switchyard_parked`,
  )
  await tx`drop table switchyard_parked`
  await tx`set local session_replication_role = origin`
}

/**
 * A partition of `parent` (`bound` as pg_get_expr writes it, or `for values …`), with the parent's owner,
 * RLS (enabled and forced) and policies: PostgreSQL applies the parent's policies to rows read through
 * the parent only, and a query naming the partition gets the partition's own.
 */
export async function createPartition(
  tx: Queries,
  parent: { name: string; schema: string; table: string },
  partition: string,
  bound: string,
) {
  await tx.unsafe(`create table ${partition} partition of ${parent.name} ${bound}`)
  const [owner] = await tx<{ owner: string }[]>`
    select pg_get_userbyid(relowner) as owner from pg_class where oid = ${parent.name}::regclass`
  if (owner) await tx.unsafe(`alter table ${partition} owner to ${quoteIdent(owner.owner)}`)
  await tx.unsafe(`alter table ${partition} enable row level security`)
  await tx.unsafe(`alter table ${partition} force row level security`)
  const policies = await tx<
    {
      name: string
      permissive: string
      roles: string[]
      cmd: string
      qual: string | null
      check: string | null
    }[]
  >`
    select policyname as name, permissive, roles::text[] as roles, cmd, qual, with_check as check
    from pg_policies where schemaname = ${parent.schema} and tablename = ${parent.table}`
  for (const policy of policies) {
    const roles = policy.roles.map((role) => (role === 'public' ? 'public' : quoteIdent(role))).join(', ')
    const using = policy.qual === null ? '' : ` using (${policy.qual})`
    const check = policy.check === null ? '' : ` with check (${policy.check})`
    await tx.unsafe(
      `create policy ${quoteIdent(policy.name)} on ${partition} as ${policy.permissive} for ${policy.cmd} to ${roles}${using}${check}`,
    )
  }
}

async function dropOlder(
  tx: postgres.TransactionSql,
  table: PartitionedTable,
  oldest: string,
  outcome: EnsureOutcome,
) {
  for (const partition of table.partitions) {
    if (partition.month === null || partition.month >= oldest) continue
    try {
      await tx.savepoint(async (inner) => {
        await inner.unsafe(`alter table ${table.name} detach partition ${partition.name}`)
        await inner.unsafe(`drop table ${partition.name}`)
      })
      outcome.dropped.push(partition.name)
    } catch (error) {
      const reason = skipReason(error)
      if (reason === undefined) throw error
      outcome.skipped.push({ month: partition.month, reason })
    }
  }
}

/**
 * Gives the target of a move every partition the source has (by bound) that it lacks, under the same
 * lock as `ensure`, before the copy: a row must find its partition there. Returns what it created; a
 * partition that cannot be made (its name taken by another bound, an overlap) is `partition_mismatch`.
 */
export async function matchPartitions(source: Sql, target: Sql, schemas: string[]): Promise<string[]> {
  const wanted = await partitionLayout(source, schemas)
  const created: string[] = []
  for (const table of wanted) {
    await target.begin(async (tx) => {
      await tx`set local timezone = 'UTC'`
      await tx`select pg_advisory_xact_lock(hashtext('switchyard.partitions'), hashtext(${table.name}))`
      const [found] = await tx<{ oid: number | null }[]>`select to_regclass(${table.name})::oid::int as oid`
      const have = found?.oid ? await partitionsOf(tx, found.oid, null) : []
      for (const partition of table.partitions) {
        if (have.some((one) => one.bound === partition.bound)) continue
        try {
          await tx.savepoint((inner) => createPartition(inner, table, partition.name, partition.bound))
        } catch (error) {
          throw partitionMismatch(table.name, partition, (error as Error).message)
        }
        created.push(partition.name)
      }
    })
  }
  return created
}

export function partitionMismatch(table: string, partition: Partition, why: string) {
  return new SwitchyardError(
    'partition_mismatch',
    `${table}: the target cannot take partition ${partition.name} (${partition.bound}): ${why}; make the shards' partitions agree (\`switchyard partitions ensure\`, \`doctor\`)`,
  )
}
