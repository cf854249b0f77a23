import type { Sql } from '../../shard/connection.ts'

/**
 * What the parse cannot see, read from a shard's catalog: which relations are plain tables, which table
 * tree each belongs to, and what else a write to it may change. The parse names `appointments_p2026_12`
 * where PostgreSQL writes a row that `select … from appointments` reads; a delete from `businesses` may
 * cascade into `services`; a trigger, a rule or a view may write anything. The read cache keys answers
 * by version fields named after tree roots, and a write it cannot account for bumps the tenant's whole
 * namespace.
 */
export interface ShardRelations {
  /** The cache epoch the catalog was read under: `switchyard migrate` bumps it after DDL. */
  epoch: string | null
  loadedAt: number
  /** A table's version field (the root of its partition or inheritance tree); undefined: not a plain table. */
  fieldOf(name: string): string | undefined
  /** The version fields a write to `name` may change; null: anything (the whole namespace). */
  writes(name: string): readonly string[] | null
  /** Function and operator names the tenant schemas define: an unqualified call may be theirs. */
  functions: ReadonlySet<string>
}

/** One relation of a tenant schema, as the catalog describes it. */
export interface RelationRow {
  name: string
  /** pg_class.relkind: r table, p partitioned table, v view, m materialized view, f foreign table. */
  kind: string
  parents: string[]
  /** It has rules: a write to it may become anything. */
  rules: boolean
  /**
   * It has triggers other than Switchyard's own (quota checks that write nothing), or column defaults
   * or checks that call a function outside pg_catalog: either may write other tables.
   */
  triggers: boolean
  /** Tables whose foreign keys to it cascade, set null or set default on delete or update. */
  cascades: string[]
  /** Its row-level security policies name other relations: its rows depend on theirs. */
  policyReads: boolean
  /** Row-level security enabled and forced. */
  forced: boolean
  /**
   * Its permissive policies' expressions (pg_get_expr), USING and WITH CHECK, for every command: a lax
   * INSERT or UPDATE policy lets another tenant write rows this tenant reads.
   */
  policies: string[]
  /** For each of its foreign keys that cascades, sets null or sets default: its columns. */
  cascadingKeys: string[][]
}

/**
 * The tenant schemas' relations and functions. Names are unqualified (the policy's too): a name in two
 * tenant schemas is both, and anything ambiguous is treated as unknown.
 */
export async function readRelations(
  sql: Sql,
  schemas: readonly string[],
): Promise<{ relations: RelationRow[]; functions: string[] }> {
  const relations = await sql<RelationRow[]>`
    select c.relname as name, c.relkind::text as kind,
      coalesce((select array_agg(p.relname::text order by p.relname)
                from pg_inherits i join pg_class p on p.oid = i.inhparent
                where i.inhrelid = c.oid), '{}') as parents,
      c.relhasrules as rules,
      exists (
        select 1 from pg_trigger t
          join pg_proc f on f.oid = t.tgfoid
          join pg_namespace fn on fn.oid = f.pronamespace
        where t.tgrelid = c.oid and not t.tgisinternal and fn.nspname <> 'switchyard')
      or exists (
        -- column defaults (generated columns too) and checks that call a function of another schema
        select 1 from pg_depend d join pg_proc f on f.oid = d.refobjid
        where d.refclassid = 'pg_proc'::regclass and f.pronamespace <> 'pg_catalog'::regnamespace
          and ((d.classid = 'pg_attrdef'::regclass
                and d.objid in (select ad.oid from pg_attrdef ad where ad.adrelid = c.oid))
            or (d.classid = 'pg_constraint'::regclass
                and d.objid in (select k.oid from pg_constraint k where k.conrelid = c.oid)))) as triggers,
      coalesce((select array_agg(distinct r.relname::text)
                from pg_constraint k join pg_class r on r.oid = k.conrelid
                where k.contype = 'f' and k.confrelid = c.oid
                  and (k.confdeltype in ('c', 'n', 'd') or k.confupdtype in ('c', 'n', 'd'))), '{}') as cascades,
      exists (
        select 1 from pg_policy pol
          join pg_depend d on d.classid = 'pg_policy'::regclass and d.objid = pol.oid
        where pol.polrelid = c.oid and d.refclassid = 'pg_class'::regclass
          and d.refobjid <> c.oid) as "policyReads",
      c.relrowsecurity and c.relforcerowsecurity as forced,
      coalesce((select array_agg(e.expr)
                from pg_policy pol,
                  lateral (values (case when pol.polcmd <> 'a' then coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') end),
                                  (pg_get_expr(pol.polwithcheck, pol.polrelid))) e(expr)
                where pol.polrelid = c.oid and pol.polpermissive and e.expr is not null), '{}') as policies,
      coalesce((select json_agg((select json_agg(a.attname::text) from pg_attribute a
                                 where a.attrelid = k.conrelid and a.attnum = any(k.conkey)))
                from pg_constraint k
                where k.contype = 'f' and k.conrelid = c.oid
                  and (k.confdeltype in ('c', 'n', 'd') or k.confupdtype in ('c', 'n', 'd'))), '[]') as "cascadingKeys"
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(${schemas as string[]}) and c.relkind in ('r', 'p', 'v', 'm', 'f')`
  const functions = await sql<{ name: string }[]>`
    select p.proname::text as name from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = any(${schemas as string[]})
    union
    select o.oprname::text from pg_operator o join pg_namespace n on n.oid = o.oprnamespace
    where n.nspname = any(${schemas as string[]})`
  return { relations: [...relations], functions: functions.map((row) => row.name) }
}

const PLAIN_KINDS = new Set(['r', 'p'])

/** How pg_get_expr shows the policy Switchyard's migrations make: a column equal to the verified tenant. */
const TENANT_POLICY =
  /^\((\w+|"(?:[^"]|"")+") = \( SELECT switchyard\.current_tenant\(\) AS current_tenant\)\)$/

/**
 * One tenant's rows only, and only by that tenant's writes: RLS forced, every permissive policy's
 * expressions exactly "this column is the verified tenant" (a policy that also shows shared rows, or
 * lets a tenant write rows of another, lets another tenant's write change this tenant's answer), and
 * every foreign key that cascades into it holds that column (one that does not lets another tenant's
 * delete reach its rows).
 */
export function isolated(row: RelationRow): boolean {
  if (!row.forced || row.policyReads || row.policies.length === 0) return false
  const columns = new Set(row.policies.map((policy) => TENANT_POLICY.exec(policy)?.[1]))
  const [column] = columns
  if (columns.size !== 1 || column === undefined) return false
  const name = column.startsWith('"') ? column.slice(1, -1).replaceAll('""', '"') : column
  return row.cascadingKeys.every((key) => key.includes(name))
}

/**
 * The catalog's rows as the cache's questions: fields to key reads by, and what writes change. A table
 * with triggers changes what `dependencies` declares for it (`cache.dependencies`), or anything when
 * nothing is declared.
 */
export function shardRelations(
  catalog: { relations: readonly RelationRow[]; functions: readonly string[] },
  epoch: string | null,
  dependencies: Readonly<Record<string, readonly string[]>>,
  loadedAt = Date.now(),
): ShardRelations {
  const byName = new Map<string, RelationRow | null>()
  // A name in two tenant schemas: unknown (null), whichever PostgreSQL would resolve.
  for (const row of catalog.relations) byName.set(row.name, byName.has(row.name) ? null : row)
  const children = new Map<string, string[]>()
  for (const row of catalog.relations)
    for (const parent of row.parents) children.set(parent, [...(children.get(parent) ?? []), row.name])
  // A parent's reads include its children's rows: every one must be isolated too.
  const isolatedTree = (name: string, depth = 0): boolean => {
    const row = byName.get(name)
    return (
      Boolean(row) &&
      isolated(row as RelationRow) &&
      depth < 32 &&
      (children.get(name) ?? []).every((child) => isolatedTree(child, depth + 1))
    )
  }
  const roots = new Map<string, string | undefined>()
  const rootOf = (name: string, seen: Set<string> = new Set()): string | undefined => {
    if (roots.has(name)) return roots.get(name)
    const row = byName.get(name)
    let root: string | undefined
    if (row && PLAIN_KINDS.has(row.kind) && isolatedTree(name) && !seen.has(name)) {
      seen.add(name)
      // One parent: the tree's root. More than one (multiple inheritance): no single field says it.
      if (row.parents.length === 0) root = name
      else if (row.parents.length === 1) root = rootOf(row.parents[0] as string, seen)
    }
    roots.set(name, root)
    return root
  }
  const writes = (name: string): readonly string[] | null => {
    const fields = new Set<string>()
    const seen = new Set<string>()
    const pending = [name]
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      if (seen.has(next)) continue
      seen.add(next)
      const row = byName.get(next)
      const root = rootOf(next)
      if (!row || !root || row.rules) return null
      const declared = Object.hasOwn(dependencies, next) ? dependencies[next] : undefined
      if (row.triggers && !declared) return null
      fields.add(root)
      // A write naming a parent reaches its partitions and children: their triggers, rules and keys too.
      pending.push(...row.cascades, ...(declared ?? []), ...(children.get(next) ?? []))
    }
    return [...fields].sort()
  }
  return {
    epoch,
    loadedAt,
    fieldOf: (name) => rootOf(name),
    writes,
    functions: new Set(catalog.functions),
  }
}

export type RelationsCatalog = Awaited<ReturnType<typeof readRelations>>

/** How long a shard's relations are trusted without a migration: DDL by hand is seen within this. */
const RELATIONS_MAX_AGE_MS = 60_000
const RETRY_AFTER_FAILURE_MS = 10_000
/** A catalog read that hangs (a shard away) must not keep its shard uncached forever. */
const LOAD_TIMEOUT_MS = 10_000

/**
 * Every shard's relations, read when first needed, again after `maxAgeMs` and whenever a lookup or a
 * bump sees another cache epoch than the one they were read under. Reads are in the background: until
 * a shard's relations are known its reads are not cached and its writes bump the whole namespace.
 */
export function createRelationsBook(
  load: (shard: string) => Promise<RelationsCatalog>,
  dependencies: Readonly<Record<string, readonly string[]>>,
  warn: (message: string) => void = () => {},
  maxAgeMs = RELATIONS_MAX_AGE_MS,
) {
  const known = new Map<string, ShardRelations>()
  const loading = new Set<string>()
  /** When a shard's catalog could not be read: not tried again (a login as its admin) for a while. */
  const failedAt = new Map<string, number>()
  const reload = (shard: string, epoch: string | null) => {
    if (loading.has(shard) || Date.now() - (failedAt.get(shard) ?? 0) < RETRY_AFTER_FAILURE_MS) return
    loading.add(shard)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), LOAD_TIMEOUT_MS)
      timer.unref()
    })
    Promise.race([load(shard), timeout])
      .then((catalog) => {
        known.set(shard, shardRelations(catalog, epoch, dependencies))
        failedAt.delete(shard)
      })
      .catch((error: unknown) => {
        known.delete(shard)
        failedAt.set(shard, Date.now())
        // Until it is read, the shard's reads are not cached: say why (a login, a shard away).
        warn(`the read cache could not read ${shard}'s catalog: ${(error as Error).message}`)
      })
      .finally(() => {
        clearTimeout(timer)
        loading.delete(shard)
      })
  }
  return {
    /** The shard's relations as last read (undefined: not yet); an old read is refreshed meanwhile. */
    latest(shard: string): ShardRelations | undefined {
      const relations = known.get(shard)
      if (!relations) reload(shard, null)
      else if (Date.now() - relations.loadedAt > maxAgeMs) reload(shard, relations.epoch)
      return relations
    },
    /** Redis gave `epoch`: relations read under another are out of date (a migration ran). */
    sawEpoch(shard: string, epoch: string | null) {
      if (known.get(shard)?.epoch !== epoch) {
        known.delete(shard)
        reload(shard, epoch)
      }
    },
  }
}

export type RelationsBook = ReturnType<typeof createRelationsBook>
