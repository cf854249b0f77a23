import { describe, expect, it } from 'vitest'
import { parseTopology } from '../../src/config/load.ts'
import { planCache, touchedBy } from '../../src/router/cache/plan.ts'
import { type RelationRow, shardRelations } from '../../src/router/cache/relations.ts'
import { classify, loadPolicy } from '../../src/router/policy.ts'

await loadPolicy()

const TENANT_ONLY = '(tenant_id = ( SELECT switchyard.current_tenant() AS current_tenant))'

const table = (name: string, more: Partial<RelationRow> = {}): RelationRow => ({
  name,
  kind: 'r',
  parents: [],
  rules: false,
  triggers: false,
  cascades: [],
  policyReads: false,
  forced: true,
  policies: [TENANT_ONLY, TENANT_ONLY],
  cascadingKeys: [],
  ...more,
})

/** A shard as its catalog would describe it, with what the parse alone gets wrong. */
const relations = shardRelations(
  {
    relations: [
      table('businesses', { cascades: ['services'] }),
      table('services', { cascades: ['service_tags'] }),
      table('service_tags'),
      table('working_hours'),
      table('appointments', { kind: 'p' }),
      table('appointments_p2026_12', { parents: ['appointments'] }),
      table('appointments_default', { parents: ['appointments'] }),
      table('cheap_services', { kind: 'v' }),
      table('audit', { triggers: true }),
      table('booking_log', { triggers: true }),
      table('ruled', { rules: true }),
      table('shared_rows', { policyReads: true }),
      table('everyones', { forced: false }),
      table('with_shared_rows', {
        policies: [
          TENANT_ONLY,
          '(shared OR (tenant_id = ( SELECT switchyard.current_tenant() AS current_tenant)))',
        ],
      }),
      table('no_policy', { policies: [] }),
      table('lax_insert', { policies: [TENANT_ONLY, 'true'] }),
      table('parent_of_shared', { kind: 'p' }),
      table('shared_child', { parents: ['parent_of_shared'], forced: false }),
      table('cascaded_by_id', { cascadingKeys: [['parent_id']] }),
      table('cascaded_by_tenant', { cascadingKeys: [['tenant_id', 'parent_id']] }),
      table('menus', { kind: 'p' }),
      table('menus_low', { parents: ['menus'], triggers: true }),
      table('left_parent'),
      table('right_parent'),
      table('twice', { parents: ['left_parent', 'right_parent'] }),
    ],
    functions: ['upper', '==='],
  },
  '7',
  { booking_log: ['working_hours'] },
)

const cache = parseTopology(
  { directory: 'postgres://h/d', shards: [{ id: 'shard-1', primary: 'postgres://h/d' }] },
  'test',
  {},
).router.cache

const plan = (sql: string, params: unknown[] = []) =>
  planCache(cache, classify(sql), { kind: 'default' }, relations, params)
const touched = (sql: string) => touchedBy([classify(sql)], relations)

describe('which reads the cache keeps, with the catalog', () => {
  it.each([
    ['select * from services', { ttlSeconds: 1800, fields: ['services'] }],
    [
      'select * from services s join businesses b using (tenant_id)',
      { ttlSeconds: 1800, fields: ['businesses', 'services'] },
    ],
    ['select * from cheap_services', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from shared_rows', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from everyones', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from with_shared_rows', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from no_policy', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from lax_insert', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from parent_of_shared', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from cascaded_by_id', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from twice', { bypass: 'reads a relation that is not a plain table' }],
    ['select * from not_there', { bypass: 'reads a relation that is not a plain table' }],
    [
      'select upper(price::int) from services',
      { bypass: 'may call a function or operator of the tenant schemas' },
    ],
    [
      'select * from services where name === $1',
      { bypass: 'may call a function or operator of the tenant schemas' },
    ],
    ['select * from appointments', { bypass: 'reads a table not in cache.tables' }],
  ] as const)('%s', (sql, expected) => {
    expect(plan(sql)).toEqual(expected)
  })

  it('keys a partition by its tree: a read of one is a read of the root', () => {
    const asked = planCache(
      cache,
      classify('select * from appointments_p2026_12'),
      { kind: 'ttl', seconds: 60 },
      relations,
      [],
    )
    expect(asked).toEqual({ ttlSeconds: 60, fields: ['appointments'] })
  })

  it('does not keep a read whose parameters PostgreSQL may read as the clock', () => {
    const sql = 'select * from services where created_at < $1'
    expect(plan(sql, ['2026-12-01'])).toEqual({ ttlSeconds: 1800, fields: ['services'] })
    for (const clock of [
      'now',
      ' Today ',
      'tomorrow 09:00',
      '{yesterday}',
      Buffer.from('now'),
      [['now']],
      { at: 'now' },
    ])
      expect(plan(sql, [clock])).toEqual({ bypass: 'depends on the clock or the session' })
  })

  it('keeps nothing before the shard catalog is known', () => {
    expect(planCache(cache, classify('select * from services'), { kind: 'default' }, undefined, [])).toEqual({
      bypass: "the shard's tables are not known yet",
    })
  })
})

describe('what a write changes, with the catalog', () => {
  it.each([
    ['update working_hours set day = 1', ['working_hours']],
    // Partitions are their tree's root, however the write names them.
    ['insert into appointments_p2026_12 (id) values (1)', ['appointments']],
    ['delete from appointments_default', ['appointments']],
    // Foreign keys that cascade, transitively.
    ['delete from businesses', ['businesses', 'service_tags', 'services']],
    // A trigger declared in cache.dependencies changes what it declares.
    ['insert into booking_log (id) values (1)', ['booking_log', 'working_hours']],
    // What the router cannot account for changes anything.
    ['update cheap_services set price = 1', null],
    ['insert into audit (id) values (1)', null],
    ['insert into ruled (id) values (1)', null],
    // An UPDATE of a parent updates its children: one with two parents has no one field.
    ['update left_parent set id = 2', null],
    ['insert into everyones (id) values (1)', null],
    // A write naming a parent reaches its partitions' own triggers.
    ['insert into menus (id) values (1)', null],
    ['delete from cascaded_by_tenant', ['cascaded_by_tenant']],
    ['insert into not_there (id) values (1)', null],
    ['update services set name = upper(1)', null],
    ['select nextval($1)', null],
    // A row lock changes nothing.
    ['select * from services for update', []],
  ] as const)('%s', (sql, fields) => {
    expect(touched(sql)).toEqual(fields)
  })

  it('changes anything on a shard whose catalog is not known', () => {
    expect(touchedBy([classify('update services set price = 1')], undefined)).toBeNull()
  })
})
