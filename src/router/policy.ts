import { createLru } from '../directory/lru.ts'
import { SwitchyardError } from '../errors.ts'
import { discardParser, isModuleFailure, loadParser, ParseError, parser } from '../shard/libpg.ts'
import { MAX_NESTING, nestingOf } from './nesting.ts'
import { identifyStatement, type StatementIdentity } from './stats/identity.ts'

/**
 * The statement policy (invariant 3): the first, fast layer. Client SQL is parsed by the real PostgreSQL
 * parser (libpg-query, WASM) and may only be one SELECT, INSERT, UPDATE, DELETE or MERGE (with CTEs). The
 * same parse tells a read from a write, which decides primary or replica. Outcomes, rejections included,
 * are cached by SQL text: an application sends the same few statements over and over.
 *
 * Relations are an allowlist: the tenant schemas' tables (unqualified names resolve there, through the
 * router's search_path) and a short list of catalog tables; so are catalog functions named `pg_*`. The
 * policy keeps clients away from what the router owns (the session, the tenant context, the fence's
 * advisory locks, the `switchyard` schema). Isolation itself holds without it, in the shard: RLS forced,
 * a context only enter() can make, a router role without privileges (see the shard's migration 0004).
 */

export type StatementKind = 'read' | 'write'

/**
 * The policy's verdict on an allowed statement, and its identity for statement statistics (src/router/stats):
 * fingerprinted with the check, so the cache by SQL text and the tenant's parse turn serve both.
 */
export interface Classified extends StatementIdentity {
  kind: StatementKind
  command: 'select' | 'insert' | 'update' | 'delete' | 'merge'
  /**
   * The tenant tables it names (by table name, without schema; CTE names are not tables), sorted: what a
   * cached answer depends on. `targets`: those it inserts into, updates, deletes from or merges into.
   */
  tables: readonly string[]
  targets: readonly string[]
  /** It reads a catalog table (their rows change with migrations, not with the tenant's writes). */
  catalog: boolean
  /**
   * Its answer may differ from one run to the next with the same rows: it reads the clock ('now',
   * current_date, now(), age(x)), random numbers, the session or its settings.
   */
  volatile: boolean
  /** It calls a function the policy cannot see into (a user function, nextval): it may write any table. */
  opaque: boolean
  /**
   * The functions and operators it names unqualified, sorted: a shard's own function named like a
   * catalog one (an `upper(int)` in a tenant schema) may be what PostgreSQL calls (src/router/cache).
   */
  calls: readonly string[]
}

const CACHE_ENTRIES = 10_000
// Texts up to 4 KiB are cached in the large cache, up to 16 KiB in a small one: at most ~80 MB and ~32 MB
// of keys (UTF-16). Longer texts (bulk inserts with inlined values) are rarely sent twice: parsed every time.
const SHORT_LENGTH = 4096
const CACHEABLE_LENGTH = 16_384
const LONG_CACHE_ENTRIES = 1_000

const COMMANDS = {
  SelectStmt: 'select',
  InsertStmt: 'insert',
  UpdateStmt: 'update',
  DeleteStmt: 'delete',
  MergeStmt: 'merge',
} as const satisfies Record<string, Classified['command']>

const DATA_MODIFYING = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt'])

/**
 * pg_catalog functions that only read, by family: these keep a statement a read. Stable and immutable
 * ones, plus a few volatile ones that read nothing and write nothing (the clock, random numbers and
 * UUIDs). Any other function makes the statement a write and sends it to the primary: that includes
 * `nextval`/`setval`/`currval`, unlisted pg_catalog functions, and every user function (qualified
 * outside pg_catalog or unknown), because the policy cannot know what a user function does and a write
 * taken for a read would run without the fence's lock.
 */
const READ_FUNCTIONS = new Set(
  [
    // aggregates and window functions
    'count sum avg min max bool_and bool_or every any_value mode corr covar_pop covar_samp stddev stddev_pop',
    'stddev_samp variance var_pop var_samp percentile_cont percentile_disc bit_and bit_or bit_xor',
    'row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value',
    // numbers
    'abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div pi degrees radians',
    'sin cos tan cot asin acos atan atan2 sind cosd tand cotd asind acosd atand atan2d sinh cosh tanh asinh',
    'acosh atanh gcd lcm factorial width_bucket scale min_scale trim_scale erf erfc gamma lgamma',
    'num_nulls num_nonnulls',
    // text and bytes
    'lower upper initcap casefold length char_length character_length octet_length bit_length bit_count',
    'concat concat_ws format left right lpad rpad btrim ltrim rtrim trim replace reverse repeat split_part',
    'strpos position substr substring overlay translate ascii chr md5 sha224 sha256 sha384 sha512 crc32',
    'crc32c encode decode quote_ident quote_literal quote_nullable starts_with unistr normalize',
    'is_normalized convert convert_from convert_to get_bit get_byte set_bit set_byte similar_to_escape',
    'similar_escape like_escape parse_ident',
    // dates and times
    'now transaction_timestamp statement_timestamp age extract isfinite timezone overlaps',
    // arrays, sets, ranges
    'generate_series generate_subscripts unnest cardinality lower_inc upper_inc lower_inf upper_inf isempty',
    // text search (ts_stat and ts_rewrite(query, text) are denied: they run SQL text)
    'setweight strip numnode querytree plainto_tsquery phraseto_tsquery websearch_to_tsquery',
    'tsvector_to_array',
    // network addresses
    'host hostmask netmask network masklen broadcast family abbrev inet_same_family inet_merge set_masklen',
    // the session and the catalog, read only
    'current_setting current_database current_schema current_schemas current_user session_user',
    'current_role system_user version pg_typeof pg_column_size pg_size_pretty pg_size_bytes',
    'pg_collation_for pg_input_is_valid pg_input_error_info format_type row_security_active',
    // volatile, yet they only read the clock, draw random numbers or wait (a wait is bounded by the
    // request's deadline; it need not hold the fence's lock on the primary)
    'clock_timestamp timeofday random random_normal gen_random_uuid uuidv4 uuidv7',
    'pg_sleep pg_sleep_for pg_sleep_until',
  ]
    .join(' ')
    .split(' '),
)

// Read-only families, by prefix: to_char, to_jsonb, jsonb_set, array_agg, regexp_replace, date_trunc,
// make_interval, ts_rank, has_table_privilege… (array_sample and array_shuffle are volatile: random).
const READ_FAMILIES =
  /^(array|json|jsonb|row_to|regexp|string|to|date|make|justify|range|multirange|ts|has|regr|uuid_extract|unicode)_/

/**
 * Catalog relations a client may read (by name, unqualified or in pg_catalog): types and the structure of
 * the tables every tenant shares, time zones for a booking product, its own session's settings. Anything
 * else named `pg_*` is refused: statistics and activity views show other sessions and other tenants.
 * (`pg_class` also holds every table's row estimate: a shard's volume, not its rows; docs/ISOLATION.md.)
 */
const CATALOG_RELATIONS = new Set(
  [
    'pg_type pg_enum pg_range pg_namespace pg_class pg_attribute pg_attrdef pg_index pg_constraint',
    'pg_collation pg_description pg_timezone_names pg_timezone_abbrevs pg_settings',
  ]
    .join(' ')
    .split(' '),
)

/** Functions named `pg_*` a client may call that are not reads: its own transaction's id. */
const CATALOG_WRITES = new Set(['pg_current_xact_id', 'pg_current_xact_id_if_assigned'])

/** Functions named `pg_*` a client may call; every other one is refused (most show the server's state). */
const isCatalogFunctionAllowed = (name: string) => READ_FUNCTIONS.has(name) || CATALOG_WRITES.has(name)

/**
 * XML in any form: libxml2 parses documents and evaluates XPath without ever checking for a cancel, so no
 * deadline, statement_timeout or cancel could stop a tenant's 80 MB document (measured: the backend ran on
 * at 1.5 GB after its request's 504).
 */
const XML =
  'XML is not allowed: libxml2 parses it without checking for a cancel, so no deadline could stop it'

/** Functions no client may call, whatever schema they are named in, and why. */
const DENIED_FUNCTIONS: ReadonlyArray<readonly [RegExp, string]> = [
  [/^set_config$/, 'set_config() is not allowed: the tenant context is set by the router'],
  [/^setseed$/, 'setseed() is not allowed: the router sets the session'],
  [/^pg_(try_)?advisory_/, "advisory locks are not allowed: the router's move fence uses them"],
  [
    /^(query|cursor)_to_xml|^ts_stat$/,
    'functions that run SQL text are not allowed: the policy cannot check it',
  ],
  [
    /^pg_read_(binary_)?file$|^pg_ls_|^pg_stat_file$|^pg_current_logfile$/,
    'reading server files is not allowed',
  ],
  [/^lo_|^lo(read|write)$/, 'large objects are not allowed: they are outside tenant isolation'],
  [/^dblink/, "dblink is not allowed: a query stays on its tenant's shard"],
  [/^xpath|^xml|_to_xml|_xml_?schema$/, XML],
  [/^currtid/, "currtid() is not allowed: it follows any row's updates, whoever's row it is"],
  [
    /^(txid_current_snapshot|pg_current_snapshot|txid_snapshot_xip|pg_snapshot_xip)$/,
    "snapshots are not allowed: they list every session's running transactions",
  ],
  [/^pg_notify$/, 'NOTIFY is not allowed: notification channels are shared by every tenant on a shard'],
  [
    /^pg_(terminate|cancel)_backend$|^pg_reload_conf$|^pg_rotate_logfile$|^pg_promote$|^pg_switch_wal$|^pg_backup_|^pg_create_restore_point$|^pg_wal_replay_|^pg_stat_reset|^pg_log_|^binary_upgrade_|^pg_import_system_collations$|^pg_(restore|clear)_(relation|attribute)_stats$/,
    'server administration functions are not allowed',
  ],
  [
    /replication_slot|^pg_replication_origin_|^pg_logical_|^pg_export_snapshot$/,
    'replication functions are not allowed',
  ],
]

const notAllowed = (reason: string) => new SwitchyardError('statement_not_allowed', reason)

let loading: Promise<void> | undefined
let loaded = false

/** Loads the WASM parser. Idempotent: every caller awaits the same load. */
export async function loadPolicy(): Promise<void> {
  loading ??= loadParser().then(
    () => {
      loaded = true
    },
    (error: unknown) => {
      loading = undefined
      throw error
    },
  )
  return loading
}

// Outcomes by SQL text; a rejection is cached as its error and thrown again.
type Outcome = Classified | SwitchyardError
const shortOutcomes = createLru<string, Outcome>(CACHE_ENTRIES)
const longOutcomes = createLru<string, Outcome>(LONG_CACHE_ENTRIES)
const outcomesFor = (sql: string) => (sql.length <= SHORT_LENGTH ? shortOutcomes : longOutcomes)

/** The schemas whose every table is a tenant table (`tenantSchema.schemas`): qualified names may name them. */
let tenantSchemas: ReadonlySet<string> = new Set(['public'])

/**
 * Tells the policy which schemas hold tenant tables (the topology's `tenantSchema.schemas`; the router's
 * search_path is the same list, so unqualified names resolve there). Outcomes cached under other schemas
 * are dropped.
 */
export function setTenantSchemas(schemas: readonly string[]): void {
  const next = new Set(schemas)
  if (next.size === tenantSchemas.size && [...next].every((schema) => tenantSchemas.has(schema))) return
  tenantSchemas = next
  shortOutcomes.clear()
  longOutcomes.clear()
}

/** classify() from the cache alone: undefined when `sql` would have to be parsed. */
export function classifyCached(sql: string): Classified | undefined {
  const outcome = outcomesFor(sql).get(sql)
  if (outcome instanceof SwitchyardError) throw outcome
  return outcome
}

/**
 * Classifies one client statement as a read or a write, or throws `statement_not_allowed` (with the
 * reason) or `syntax_error` (with the parser's message and position). Call `loadPolicy()` first.
 */
export function classify(sql: string): Classified {
  let outcome = outcomesFor(sql).get(sql)
  if (outcome === undefined) {
    if (!loaded) throw new Error('the statement policy is not loaded: await loadPolicy() first')
    try {
      outcome = Object.freeze(check(sql))
    } catch (error) {
      // Not an outcome of the statement: the parser was being replaced (src/shard/libpg.ts).
      if (!(error instanceof SwitchyardError) || error.code === 'router_busy') throw error
      outcome = error
    }
    if (sql.length <= CACHEABLE_LENGTH) outcomesFor(sql).set(sql, outcome)
  }
  if (outcome instanceof SwitchyardError) throw outcome
  return outcome
}

/** One statement of a simple Query's text: its own SQL and the parser's name for it (SelectStmt, VariableSetStmt, …). */
export interface SplitStatement {
  sql: string
  type: string
  node: Record<string, unknown>
}

/**
 * A simple Query's text cut into its statements by the real parser (PostgreSQL runs them one by one):
 * each keeps its own text, so the policy checks it alone. Throws `syntax_error` as classify() does.
 */
export function splitStatements(sql: string): SplitStatement[] {
  if (!loaded) throw new Error('the statement policy is not loaded: await loadPolicy() first')
  if (sql.includes('\0')) throw notAllowed('the query contains a NUL character')
  const raws = parseRaw(sql)
  // Locations are byte offsets into the UTF-8 text; a length of 0 means "to the end".
  const bytes = Buffer.from(sql)
  return raws.map((raw) => {
    const from = raw.stmt_location ?? 0
    const to = raw.stmt_len ? from + raw.stmt_len : bytes.length
    const [type, node] = Object.entries(raw.stmt ?? {})[0] ?? ['', {}]
    return { sql: bytes.toString('utf8', from, to).trim(), type, node: node as Record<string, unknown> }
  })
}

function check(sql: string): Classified {
  // The parser reads a C string: it would stop at a NUL and check less than PostgreSQL receives.
  if (sql.includes('\0')) throw notAllowed('the query contains a NUL character')
  if (sql.trim() === '') throw notAllowed('the query is empty')
  const statements = parse(sql)
  if (statements.length === 0) throw notAllowed('the query is empty')
  if (statements.length > 1) throw notAllowed(`only one statement per query (found ${statements.length})`)
  const [type, node] = Object.entries(statements[0] ?? {})[0] ?? ['', {}]
  if (!(type in COMMANDS)) throw notAllowed(statementReason(type, node as Record<string, unknown>))
  const command = COMMANDS[type as keyof typeof COMMANDS]
  const facts = scan(node)
  return {
    kind: command === 'select' && !facts.writes ? 'read' : 'write',
    command,
    tables: [...facts.tables].sort(),
    targets: [...facts.targets].sort(),
    catalog: facts.catalog,
    volatile: facts.volatile,
    opaque: facts.opaque,
    calls: [...facts.calls].sort(),
    ...identifyStatement(sql, statements[0]),
  }
}

function parse(sql: string): Record<string, unknown>[] {
  return parseRaw(sql).map((raw) => (raw.stmt ?? {}) as Record<string, unknown>)
}

/** The parser's statements with where each is in the text; its errors as `syntax_error`. */
function parseRaw(sql: string): { stmt?: object; stmt_location?: number; stmt_len?: number }[] {
  // Before the parser, never after: a tree too deep for it breaks the WASM module for every tenant.
  const nesting = nestingOf(sql)
  if (nesting > MAX_NESTING)
    throw notAllowed(
      `the statement is nested too deeply to check (up to ${nesting} levels; at most ${MAX_NESTING})`,
    )
  const libpg = parser()
  if (!libpg)
    throw new SwitchyardError('router_busy', 'the statement parser is restarting: retry in a moment', {
      retryAfterSeconds: 1,
    })
  try {
    return libpg.parseSync(sql).stmts ?? []
  } catch (error) {
    if (error instanceof ParseError) {
      const position = error.cursorPosition + 1
      throw new SwitchyardError('syntax_error', `${error.message} at position ${position}`, { position })
    }
    // The module itself failed (its stack, a trap; or JSON.parse on a very deep tree): it may be broken
    // for every later call, so it goes (src/shard/libpg.ts), and the statement is refused.
    if (isModuleFailure(error)) {
      discardParser(libpg)
      throw notAllowed('the statement is nested too deeply to check')
    }
    throw error
  }
}

/** CTE names a part of the statement can see: an unqualified name among them is not a table. */
interface Scope {
  has(name: string): boolean
}
const NO_CTES: Scope = { has: () => false }

/**
 * The first `upTo` names of one WITH list (`first`: each name's first position), over the scope around
 * it. O(1) to make: a copied set per CTE made a 64 KiB WITH of thousands of CTEs quadratic (seconds of
 * one tenant's parse, with every other tenant waiting: an attacker's read).
 */
function scopeOf(first: ReadonlyMap<string, number>, upTo: number, outer: Scope): Scope {
  return { has: (name) => (first.get(name) ?? upTo) < upTo || outer.has(name) }
}

interface WithClause {
  ctes?: { CommonTableExpr?: { ctename?: string; ctequery?: object } }[]
  recursive?: boolean
}

/** What one pass over a statement's tree found (see Classified). */
interface Facts {
  writes: boolean
  tables: Set<string>
  targets: Set<string>
  catalog: boolean
  volatile: boolean
  opaque: boolean
  calls: Set<string>
}

/**
 * Functions whose answer changes with the clock, chance or the session, not only with the rows they
 * read: a cached answer would be wrong (now(), random()), or another session's (current_setting()).
 * age(x) with one argument counts from current_date.
 */
const VOLATILE_FUNCTIONS = new Set(
  [
    'now transaction_timestamp statement_timestamp clock_timestamp timeofday random random_normal',
    'gen_random_uuid uuidv4 uuidv7 pg_sleep pg_sleep_for pg_sleep_until current_setting current_database',
    'current_schema current_schemas current_user session_user current_role system_user version',
    'pg_current_xact_id pg_current_xact_id_if_assigned row_security_active array_sample array_shuffle',
    // AT TIME ZONE: a time (not a timestamp) with a zone that keeps summer time uses today's offset
    'timezone',
  ]
    .join(' ')
    .split(' '),
)

/**
 * Words the date/time input functions read as the clock, anywhere in a string ('now'::timestamptz,
 * 'today 09:00', '{now}' as a date[]): their parser splits fields at anything but letters.
 */
const CLOCK_WORDS = /(?<![a-z])(now|today|tomorrow|yesterday)(?![a-z])/i

/** Array, range and record input drop backslashes before a date is read: '{to\\day}'::date[] is today. */
export const readsAsClock = (text: string) => CLOCK_WORDS.test(text.replaceAll('\\', ''))

/**
 * Types whose input from text never reads the clock. A cast of anything but a literal or a parameter
 * (both checked for clock words) to any other type may: `('to'||'day')::date`, a text column cast to a
 * domain over timestamptz, a record whose field is a date.
 */
const CLOCKLESS_TYPES = new Set(
  'int2 int4 int8 smallint integer int bigint numeric decimal float4 float8 real text varchar bpchar char name bool boolean uuid bytea json jsonb'.split(
    ' ',
  ),
)

/**
 * One pass over the whole parse tree (iterative: trees can be deep). Rejects what no statement may
 * contain anywhere and tells whether the statement writes: a locking clause (FOR UPDATE/SHARE), a
 * data-modifying CTE, or a function not known to be read-only. Every node is visited with the CTE names
 * in scope there, so a relation name is checked the way PostgreSQL will resolve it. On the way it notes
 * the tables named (and written), catalog reads and what makes an answer vary between runs.
 */
function scan(root: unknown): Facts {
  let writes = false
  const facts: Facts = {
    writes,
    tables: new Set(),
    targets: new Set(),
    catalog: false,
    volatile: false,
    opaque: false,
    calls: new Set(),
  }
  const pending: { node: unknown; ctes: Scope }[] = [{ node: root, ctes: NO_CTES }]
  for (let item = pending.pop(); item; item = pending.pop()) {
    const { node } = item
    if (typeof node !== 'object' || node === null) continue
    if (Array.isArray(node)) {
      for (const child of node) pending.push({ node: child, ctes: item.ctes })
      continue
    }
    let ctes = item.ctes
    const withClause = (node as { withClause?: WithClause }).withClause
    if (withClause) {
      const scoped = withScope(withClause, ctes, pending)
      ctes = scoped.ctes
      if (scoped.writes) writes = true
    }
    for (const key in node) {
      if (key === 'withClause') continue
      const value: unknown = (node as Record<string, unknown>)[key]
      switch (key) {
        case 'FuncCall':
          if (callWrites(value as FuncCall)) {
            writes = true
            facts.opaque = true
          }
          if (callVaries(value as FuncCall)) facts.volatile = true
          noteCall(facts, (value as FuncCall).funcname)
          break
        case 'A_Expr':
          noteOperator(facts, (value as { name?: unknown }).name)
          if (facts.opaque) writes = true
          break
        case 'operName': // x op ANY (subquery)
        case 'useOp': // ORDER BY x USING op
          noteOperator(facts, value)
          if (facts.opaque) writes = true
          break
        case 'SQLValueFunction': // current_date, current_timestamp, localtime, current_user, …
        case 'RangeTableSample': // TABLESAMPLE: chance, or the table's physical layout
        case 'JsonFuncExpr': // JSON_VALUE(… RETURNING date): text read as a date, no cast in sight
        case 'JsonTable':
          facts.volatile = true
          break
        case 'TypeCast':
          if (castMayReadClock(value as TypeCast)) facts.volatile = true
          break
        case 'sval':
          if (typeof value === 'string' && readsAsClock(value)) facts.volatile = true
          break
        case 'lockingClause':
          if (Array.isArray(value) && value.length > 0) writes = true
          break
        case 'RangeVar':
          note(facts, checkRelation(value as Relation, ctes), false)
          break
        case 'relation':
          // INSERT/UPDATE/DELETE/MERGE name their target without the RangeVar wrapper: a tenant table.
          if (typeof (value as Relation)?.relname === 'string')
            note(facts, checkRelation(value as Relation, NO_CTES, true), true)
          break
        case 'intoClause':
          throw notAllowed('SELECT INTO is not allowed: it creates a table')
        case 'RangeTableFunc': // XMLTABLE
        case 'XmlExpr': // XMLPARSE, XMLELEMENT, XMLCONCAT, IS DOCUMENT, …
        case 'XmlSerialize':
          throw notAllowed(XML)
        case 'TypeName':
        case 'typeName':
          // '…'::xml, cast(… as xml), xml[]: the type's input function is libxml2's parser.
          if (/^_?xml$/.test(qualifiedName((value as { names?: unknown }).names)?.name ?? ''))
            throw notAllowed(XML)
          break
        case 'schemaname':
          if (value === 'switchyard') throw notAllowed('references to the switchyard schema are not allowed')
          break
        // Qualified names: type names (casts), operators, collations, functions.
        case 'names':
        case 'name':
        case 'collname':
        case 'funcname':
          if (qualifiedName(value)?.schema === 'switchyard') {
            throw notAllowed('references to the switchyard schema are not allowed')
          }
          break
      }
      if (typeof value === 'object' && value !== null) pending.push({ node: value, ctes })
    }
  }
  facts.writes = writes
  return facts
}

function note(facts: Facts, relation: RelationKind, target: boolean) {
  if (relation.kind === 'catalog') facts.catalog = true
  if (relation.kind !== 'table') return
  facts.tables.add(relation.name)
  if (target) facts.targets.add(relation.name)
}

/**
 * A function or operator name that may be a tenant schema's: unqualified (PostgreSQL may pick the
 * schema's over the catalog's) or qualified with a tenant schema.
 */
function noteCall(facts: Facts, names: unknown) {
  const name = qualifiedName(names)
  if (name && (name.schema === undefined || tenantSchemas.has(name.schema))) facts.calls.add(name.name)
}

/** An operator: noted like a function; one qualified outside pg_catalog is a user function the policy cannot see into. */
function noteOperator(facts: Facts, names: unknown) {
  noteCall(facts, names)
  const schema = qualifiedName(names)?.schema
  if (schema !== undefined && schema !== 'pg_catalog') facts.opaque = true
}

interface TypeCast {
  arg?: Record<string, unknown>
  typeName?: { names?: unknown }
}

function castMayReadClock(cast: TypeCast): boolean {
  const type = qualifiedName(cast.typeName?.names)?.name ?? ''
  if (CLOCKLESS_TYPES.has(type)) return false
  // A time with a named zone takes that zone's offset on today's date (summer or winter).
  if (type === 'timetz') return true
  const arg = Object.keys(cast.arg ?? {})[0]
  return arg !== 'A_Const' && arg !== 'ParamRef'
}

function callVaries(call: FuncCall): boolean {
  const { name } = qualifiedName(call.funcname) ?? { name: '' }
  return (
    VOLATILE_FUNCTIONS.has(name) ||
    (name === 'age' && call.args?.length === 1) ||
    // A record built from JSON reads its date fields with the date/time input: 'now' is the clock.
    /populate_record|_to_record/.test(name)
  )
}

/**
 * Queues a WITH list's CTE bodies with the names each can see (PostgreSQL's rules: in WITH RECURSIVE every
 * CTE sees them all, itself included; otherwise each sees the ones before it) and returns the names the
 * rest of the statement sees, and whether a CTE modifies data.
 */
function withScope(
  withClause: WithClause,
  outer: Scope,
  pending: { node: unknown; ctes: Scope }[],
): { ctes: Scope; writes: boolean } {
  const ctes = withClause.ctes ?? []
  const first = new Map<string, number>()
  ctes.forEach((cte, i) => {
    const name = cte.CommonTableExpr?.ctename ?? ''
    if (!first.has(name)) first.set(name, i)
  })
  let writes = false
  ctes.forEach((cte, i) => {
    const query = cte.CommonTableExpr?.ctequery ?? {}
    if (Object.keys(query).some((type) => DATA_MODIFYING.has(type))) writes = true
    pending.push({ node: query, ctes: scopeOf(first, withClause.recursive ? ctes.length : i, outer) })
  })
  return { ctes: scopeOf(first, ctes.length, outer), writes }
}

interface Relation {
  schemaname?: string
  relname: string
}

type RelationKind = { kind: 'cte' | 'catalog' } | { kind: 'table'; name: string }

/**
 * A relation is a CTE in scope, a table of a tenant schema, or an allowed catalog table (read only);
 * nothing else. Unqualified names resolve through the router's search_path (the tenant schemas) after
 * pg_catalog, whose relations all start with `pg_`: an unqualified `pg_*` name is the catalog's.
 */
function checkRelation(relation: Relation, ctes: Scope, target = false): RelationKind {
  const { schemaname: schema, relname: name } = relation
  if (schema === 'switchyard') throw notAllowed('references to the switchyard schema are not allowed')
  const catalog = name.startsWith('pg_')
  const readable = !target && CATALOG_RELATIONS.has(name)
  if (schema === undefined) {
    if (ctes.has(name)) return { kind: 'cte' }
    if (readable) return { kind: 'catalog' }
    if (!catalog) return { kind: 'table', name }
  } else if (schema === 'pg_catalog') {
    if (readable) return { kind: 'catalog' }
  } else if (tenantSchemas.has(schema) && !catalog) {
    return { kind: 'table', name }
  }
  const shown = schema === undefined ? name : `${schema}.${name}`
  throw notAllowed(
    `relation ${shown} is not allowed: a query may read the tenant tables (${[...tenantSchemas].join(', ')}) and a few catalog tables`,
  )
}

interface FuncCall {
  funcname?: unknown
  args?: unknown[]
}

function callWrites(call: FuncCall): boolean {
  const { schema, name } = qualifiedName(call.funcname) ?? { name: '' }
  if (schema === 'switchyard') throw notAllowed('calls into the switchyard schema are not allowed')
  for (const [pattern, reason] of DENIED_FUNCTIONS) if (pattern.test(name)) throw notAllowed(reason)
  // ts_rewrite(query, 'SELECT …') runs its second argument as SQL; only the three-argument form does not.
  if (name === 'ts_rewrite' && call.args?.length !== 3) {
    throw notAllowed('functions that run SQL text are not allowed: the policy cannot check it')
  }
  if (name.startsWith('pg_') && !isCatalogFunctionAllowed(name)) {
    throw notAllowed(
      `${name}() is not allowed: catalog functions show the server's state, other sessions and other tenants`,
    )
  }
  if (schema !== undefined && schema !== 'pg_catalog') {
    if (!tenantSchemas.has(schema))
      throw notAllowed(
        `functions in schema ${schema} are not allowed: only the tenant schemas' and the catalog's`,
      )
    return true
  }
  return !(READ_FUNCTIONS.has(name) || READ_FAMILIES.test(name))
}

/** A parse-tree name list (`[{String:{sval}}, …]`) as schema and name; undefined for anything else. */
function qualifiedName(list: unknown): { schema?: string; name: string } | undefined {
  if (!Array.isArray(list) || list.length === 0) return undefined
  const parts = list.map((part: { String?: { sval?: string } }) => part?.String?.sval ?? '')
  return {
    schema: parts.length > 1 ? parts[parts.length - 2] : undefined,
    name: parts[parts.length - 1] ?? '',
  }
}

const TRANSACTION_CONTROL = 'the router runs each query in its own transaction'
const ONLY_DML = 'client SQL may only be SELECT, INSERT, UPDATE, DELETE or MERGE'
const TRANSACTION_KINDS: Record<string, string> = {
  START: 'START TRANSACTION',
  RELEASE: 'RELEASE SAVEPOINT',
  ROLLBACK_TO: 'ROLLBACK TO SAVEPOINT',
  PREPARE: 'PREPARE TRANSACTION',
  COMMIT_PREPARED: 'COMMIT PREPARED',
  ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
}
// Parse-tree node names that do not read as the SQL that produced them.
const LABELS: Record<string, string> = {
  CreateStmt: 'CreateTable',
  IndexStmt: 'CreateIndex',
  ViewStmt: 'CreateView',
  RuleStmt: 'CreateRule',
  CompositeTypeStmt: 'CreateType',
  DefineStmt: 'Create',
  GrantStmt: 'GrantOrRevoke',
  GrantRoleStmt: 'GrantOrRevokeRole',
  DeclareCursorStmt: 'Declare',
  ClosePortalStmt: 'Close',
  CheckPointStmt: 'Checkpoint',
}
const DDL =
  /^(Create|Alter|Drop|Define|Index|View|Rule|CompositeType|Rename|Comment|SecLabel|Grant|ImportForeignSchema|ReassignOwned|RefreshMatView)/

/** Why a statement other than SELECT/INSERT/UPDATE/DELETE/MERGE is refused, in the user's terms. */
function statementReason(type: string, node: Record<string, unknown>): string {
  switch (type) {
    case 'VariableSetStmt': {
      const reset = String(node.kind).startsWith('VAR_RESET')
      const target =
        node.name === 'role' ? ' ROLE' : node.name === 'session_authorization' ? ' SESSION AUTHORIZATION' : ''
      return `${reset ? 'RESET' : 'SET'}${target} is not allowed: the router sets the session`
    }
    case 'VariableShowStmt':
      return 'SHOW is not allowed: read a setting with current_setting()'
    case 'DoStmt':
      return 'DO is not allowed: anonymous code blocks cannot be checked'
    case 'TransactionStmt': {
      const kind = String(node.kind).replace('TRANS_STMT_', '')
      return `transaction control (${TRANSACTION_KINDS[kind] ?? kind}) is not allowed: ${TRANSACTION_CONTROL}`
    }
    case 'CopyStmt':
      return 'COPY is not allowed: use INSERT or SELECT'
    case 'ListenStmt':
    case 'UnlistenStmt':
    case 'NotifyStmt':
      return `${type.replace('Stmt', '').toUpperCase()} is not allowed: notification channels are shared by every tenant on a shard`
    case 'ExplainStmt':
      return 'EXPLAIN is not allowed: plans show the statistics of every tenant on the shard'
    case 'TruncateStmt':
      return 'TRUNCATE is not allowed: it bypasses row-level security'
    case 'LockStmt':
      return 'LOCK is not allowed: a table lock blocks every tenant on the shard'
    case 'CreateTableAsStmt':
      return 'CREATE TABLE AS is not allowed: schema changes go through migrations'
  }
  const label = (LABELS[type] ?? type)
    .replace(/Stmt$/, '')
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .toUpperCase()
  if (DDL.test(type)) return `DDL is not allowed (${label}): schema changes go through migrations`
  return `${label || 'this statement'} is not allowed: ${ONLY_DML}`
}
