import { randomUUID } from 'node:crypto'
import { describe, expect } from 'vitest'
import type { RunningRouter } from '../src/router/server.ts'
import {
  adminAndAppKeys,
  connect,
  it,
  removeTenants,
  startTestRouter,
  type TestTenant,
  tenantWithKey,
} from './fixtures.ts'
import { newApiRequest, query } from './router-support.ts'
import { newTenantId, topology } from './support.ts'

let router: RunningRouter
let adminKey: string
let appKey: string
const created: string[] = []
const plans: string[] = []
const directory = () => connect(topology().directory)

it.beforeAll(async () => {
  router = await startTestRouter()
  ;({ admin: adminKey, app: appKey } = await adminAndAppKeys('admin-api test'))
})

it.afterAll(async () => {
  if (plans.length) await directory()`delete from rebalance_plans where id = any(${plans}::uuid[])`
  await removeTenants(created)
  await directory()`update shards set state = 'active', capacity = 100 where state <> 'active' or capacity <> 100`
})

interface ErrorBody {
  error: { code: string; message: string; [detail: string]: unknown }
}

/** One admin API call; `key: null` sends none, a string sends that key, the default is the admin key. */
async function call<T = Record<string, unknown>>(
  method: string,
  path: string,
  body?: unknown,
  key: string | null = adminKey,
): Promise<{ status: number; body: T & Partial<ErrorBody> }> {
  const headers: Record<string, string> = {}
  if (key !== null) headers.authorization = `Bearer ${key}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(`${router.url}/admin/v1${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  })
  return { status: response.status, body: (await response.json()) as T & Partial<ErrorBody> }
}

const someUuid = '00000000-0000-4000-8000-000000000000'
const ENDPOINTS: [string, string][] = [
  ['GET', '/tenants'],
  ['POST', '/tenants'],
  ['GET', `/tenants/${someUuid}`],
  ['PATCH', `/tenants/${someUuid}/limits`],
  ['GET', '/shards'],
  ['POST', '/shards/shard-3/drain'],
  ['POST', '/shards/shard-3/undrain'],
  ['GET', '/nodes'],
  ['GET', '/plans'],
  ['GET', '/stats/tenants'],
  ['POST', '/plans'],
  ['GET', `/plans/${someUuid}`],
  ['POST', `/plans/${someUuid}/apply`],
  ['POST', `/plans/${someUuid}/cancel`],
  ['GET', '/moves'],
  ['GET', `/moves/${someUuid}`],
]

describe('admin API: admin keys only', () => {
  it.each(ENDPOINTS)('%s %s: no key → 401, a bad key → 401, an app key → 403', async (method, path) => {
    const none = await call(method, path, undefined, null)
    expect([none.status, none.body.error?.code]).toEqual([401, 'unauthorized'])
    const bad = await call(method, path, undefined, `sy_aaaaaaaaaaaa_${'a'.repeat(43)}`)
    expect([bad.status, bad.body.error?.code]).toEqual([401, 'unauthorized'])
    const app = await call(method, path, undefined, appKey)
    expect([app.status, app.body.error?.code]).toEqual([403, 'forbidden'])
    expect(app.body.error?.message).toMatch(/admin key/)
  })

  it('nothing was changed by the refused calls', async () => {
    const [row] = await directory()`select state from shards where id = 'shard-3'`
    expect(row?.state).toBe('active')
  })

  it('an unknown admin path is a 404 for an admin key', async () => {
    const answer = await call('GET', '/nothing-here')
    expect([answer.status, answer.body.error?.code]).toEqual([404, 'not_found'])
  })
})

describe('admin API: tenants', () => {
  it('POST /tenants places a tenant (or puts it on the shard named); the router serves it at once', async () => {
    const id = newTenantId()
    created.push(id)
    const tenant: TestTenant = { id, shard: '', key: appKey }
    // Ask the router first: it now remembers the tenant as unknown for a while.
    const before = await query(router, tenant, 'select 1 as one')
    expect(before.status).toBe(404)
    const added = await call<{ id: string; shardId: string; name: string }>('POST', '/tenants', { id })
    expect(added.status).toBe(201)
    expect(added.body).toMatchObject({ id, name: `tenant-${id.slice(0, 8)}`, epoch: 1, state: 'active' })
    expect(['shard-1', 'shard-2', 'shard-3']).toContain(added.body.shardId)
    // Adding it invalidated the route: no wait for the negative cache.
    const after = await query(router, tenant, 'select 1 as one')
    expect(after.status).toBe(200)

    const named = newTenantId()
    created.push(named)
    const onShard2 = await call('POST', '/tenants', { id: named, shard: 'shard-2', name: 'Spa Sur' })
    expect(onShard2.status).toBe(201)
    expect(onShard2.body).toMatchObject({ id: named, shardId: 'shard-2', name: 'Spa Sur' })
    const [owned] = await connect(
      topology().shards[1]?.primary as string,
    )`select state from switchyard.tenant_ownership where tenant_id = ${named}`
    expect(owned?.state).toBe('owner')

    const again = await call('POST', '/tenants', { id: named })
    expect([again.status, again.body.error?.code]).toEqual([409, 'tenant_exists'])
  })

  it.each([
    [{ id: 'nope' }, 400, 'invalid_input'],
    [{}, 400, 'invalid_input'],
    [{ id: '{id}', extra: 1 }, 400, 'invalid_input'],
    [{ id: '{id}', shard: 'Shard 1' }, 400, 'invalid_input'],
    [{ id: '{id}', name: '' }, 400, 'invalid_input'],
    [{ id: '{id}', shard: 'shard-9' }, 404, 'shard_unknown'],
    ['{"id": ', 400, 'invalid_json'],
  ])('POST /tenants %j → %i %s, nothing written', async (body, status, code) => {
    const id = newTenantId()
    const sent = typeof body === 'string' ? body : JSON.parse(JSON.stringify(body).replace('{id}', id))
    const answer = await call('POST', '/tenants', sent)
    expect([answer.status, answer.body.error?.code]).toEqual([status, code])
    const [row] = await directory()`select id from tenants where id = ${id}`
    expect(row).toBeUndefined()
  })

  it('POST /tenants on a draining shard is a 409 shard_draining', async () => {
    await directory()`update shards set state = 'draining' where id = 'shard-3'`
    try {
      const answer = await call('POST', '/tenants', { id: newTenantId(), shard: 'shard-3' })
      expect([answer.status, answer.body.error?.code]).toEqual([409, 'shard_draining'])
    } finally {
      await directory()`update shards set state = 'active' where id = 'shard-3'`
    }
  })

  it('GET /tenants lists them; GET /tenants/:id shows one with ownership, usage and limits', async () => {
    const tenant = await tenantWithKey('shard-2')
    created.push(tenant.id)
    expect((await query(router, tenant, 'select count(*) from services')).status).toBe(200)
    const listed = await call<{ tenants: { id: string }[] }>('GET', '/tenants')
    expect(listed.status).toBe(200)
    expect(listed.body.tenants.map((t) => t.id)).toContain(tenant.id)

    const shown = await call('GET', `/tenants/${tenant.id}`)
    expect(shown.status).toBe(200)
    expect(shown.body).toMatchObject({
      id: tenant.id,
      shardId: 'shard-2',
      ownership: { state: 'owner', epoch: 1 },
      limits: {},
      effectiveLimits: topology().tenantLimits,
      usage: { rows: 0, bytes: 0, requests: { available: true, count: 1 } },
    })
    const tables = (shown.body.usage as { tables: { table: string }[] }).tables.map((t) => t.table)
    expect(tables).toContain('public.services')

    const bad = await call('GET', '/tenants/not-a-uuid')
    expect([bad.status, bad.body.error?.code]).toEqual([400, 'invalid_input'])
    const unknown = await call('GET', `/tenants/${randomUUID()}`)
    expect([unknown.status, unknown.body.error?.code]).toEqual([404, 'tenant_unknown'])
  })

  it('PATCH /tenants/:id/limits overrides limits, null removes one, and the router applies them at once', async () => {
    const tenant = await tenantWithKey('shard-1')
    created.push(tenant.id)
    // The route (and its limits) is now cached by the router.
    expect((await query(router, tenant, 'select 1')).status).toBe(200)

    const patched = await call('PATCH', `/tenants/${tenant.id}/limits`, {
      api_rate_limit: 2,
      max_services: 7,
    })
    expect(patched.status).toBe(200)
    expect(patched.body).toMatchObject({
      id: tenant.id,
      limits: { api_rate_limit: 2, max_services: 7 },
      effectiveLimits: { ...topology().tenantLimits, api_rate_limit: 2, max_services: 7 },
    })
    const [row] = await directory()`select limits from tenants where id = ${tenant.id}`
    expect(row?.limits).toEqual({ api_rate_limit: 2, max_services: 7 })

    // Two API requests of the hour are what the new limit allows (the first statement named none).
    for (let i = 0; i < 2; i++)
      expect((await query(router, tenant, 'select 1', [], { headers: newApiRequest() })).status).toBe(200)
    const limited = await query<ErrorBody>(router, tenant, 'select 1', [], { headers: newApiRequest() })
    expect([limited.status, limited.body.error.code]).toEqual([429, 'rate_limited'])

    const removed = await call('PATCH', `/tenants/${tenant.id}/limits`, { api_rate_limit: null })
    expect(removed.status).toBe(200)
    expect(removed.body.limits).toEqual({ max_services: 7 })
    expect((await query(router, tenant, 'select 1')).status).toBe(200)
  })

  it.each([
    [{ max_services: -1 }, 'max_services'],
    [{ max_services: 1.5 }, 'max_services'],
    [{ max_services: '5' }, 'max_services'],
    [{ max_tables: 5 }, 'max_tables'],
    [{}, 'at least one'],
    [[1], ''],
  ])('PATCH limits %j → 400 invalid_input, nothing written', async (body, message) => {
    const tenant = await tenantWithKey('shard-1', { max_staff: 3 })
    created.push(tenant.id)
    const answer = await call('PATCH', `/tenants/${tenant.id}/limits`, body)
    expect([answer.status, answer.body.error?.code]).toEqual([400, 'invalid_input'])
    expect(answer.body.error?.message).toContain(message)
    const [row] = await directory()`select limits from tenants where id = ${tenant.id}`
    expect(row?.limits).toEqual({ max_staff: 3 })
  })

  it('PATCH limits of an unknown tenant is a 404; a bad id a 400', async () => {
    const unknown = await call('PATCH', `/tenants/${randomUUID()}/limits`, { max_staff: 1 })
    expect([unknown.status, unknown.body.error?.code]).toEqual([404, 'tenant_unknown'])
    const bad = await call('PATCH', '/tenants/nope/limits', { max_staff: 1 })
    expect([bad.status, bad.body.error?.code]).toEqual([400, 'invalid_input'])
  })
})

describe('admin API: shards, plans, moves', () => {
  it('GET /shards: fill, rows, bytes and replica lag per shard', async () => {
    const answer = await call<{ shards: Record<string, unknown>[] }>('GET', '/shards')
    expect(answer.status).toBe(200)
    const counted = await directory()<{ id: string; n: number }[]>`
      select s.id, count(t.id)::int as n from shards s left join tenants t on t.shard_id = s.id
      group by s.id order by s.id`
    expect(answer.body.shards.map((s) => [s.id, s.tenants])).toEqual(counted.map((c) => [c.id, c.n]))
    for (const s of answer.body.shards) {
      expect(s).toMatchObject({
        state: 'active',
        capacity: 100,
        rows: expect.any(Number),
        bytes: expect.any(Number),
        replicas: [{ name: `${s.id}-replica-1`, lagBytes: expect.any(Number) }],
      })
    }
  })

  it('POST /shards/:id/drain stores a plan moving its tenants away; undrain cancels it', async () => {
    const tenant = await tenantWithKey('shard-3')
    created.push(tenant.id)
    const drained = await call<{ id: string; moves: { tenant: string; to: string }[] }>(
      'POST',
      '/shards/shard-3/drain',
    )
    expect(drained.status).toBe(201)
    plans.push(drained.body.id)
    expect(drained.body).toMatchObject({ strategy: 'drain', shard: 'shard-3', state: 'planned' })
    expect(drained.body.moves.map((m) => m.tenant)).toContain(tenant.id)
    expect(drained.body.moves.every((m) => m.to !== 'shard-3')).toBe(true)
    const shards = await call<{ shards: { id: string; state: string }[] }>('GET', '/shards')
    expect(shards.body.shards.find((s) => s.id === 'shard-3')?.state).toBe('draining')

    const undrained = await call('POST', '/shards/shard-3/undrain')
    expect(undrained.status).toBe(200)
    expect(undrained.body).toMatchObject({
      shard: { id: 'shard-3', state: 'active' },
      cancelledPlans: [drained.body.id],
    })
    const plan = await call('GET', `/plans/${drained.body.id}`)
    expect(plan.body.state).toBe('cancelled')
  })

  it('drain and undrain of an unknown shard → 404, of a bad id → 400', async () => {
    for (const action of ['drain', 'undrain']) {
      const unknown = await call('POST', `/shards/shard-9/${action}`)
      expect([unknown.status, unknown.body.error?.code]).toEqual([404, 'shard_unknown'])
      const bad = await call('POST', `/shards/Shard_9/${action}`)
      expect([bad.status, bad.body.error?.code]).toEqual([400, 'invalid_input'])
    }
  })

  it('a full topology: drain → 409 no_capacity with the fill, nothing written', async () => {
    created.push((await tenantWithKey('shard-3')).id)
    const counted = await directory()<{ id: string; n: number }[]>`
      select s.id, count(t.id)::int as n from shards s left join tenants t on t.shard_id = s.id
      group by s.id order by s.id`
    try {
      // No room anywhere: each shard's capacity is what it holds (at least 1).
      for (const c of counted)
        await directory()`update shards set capacity = ${Math.max(1, c.n)} where id = ${c.id}`
      const [before] = await directory()`select count(*)::int as n from rebalance_plans`
      const refused = await call('POST', '/shards/shard-3/drain')
      expect([refused.status, refused.body.error?.code]).toEqual([409, 'no_capacity'])
      expect(refused.body.error?.shards).toHaveLength(3)
      const [after] = await directory()`select count(*)::int as n from rebalance_plans`
      expect(after?.n).toBe(before?.n)
      const [state] = await directory()`select state from shards where id = 'shard-3'`
      expect(state?.state).toBe('active')
    } finally {
      await directory()`update shards set state = 'active', capacity = 100`
    }
  })

  it('POST /plans stores a plan; GET shows it; apply validates its options; cancel closes it', async () => {
    const made = await call<{ id: string; state: string; moves: unknown[] }>('POST', '/plans', {
      strategy: 'count',
    })
    expect(made.status).toBe(201)
    plans.push(made.body.id)
    expect(made.body).toMatchObject({ strategy: 'count', state: 'planned', shard: null })
    const byDefault = await call<{ id: string }>('POST', '/plans')
    expect([byDefault.status, (byDefault.body as { strategy?: string }).strategy]).toEqual([201, 'count'])
    plans.push(byDefault.body.id)
    const size = await call<{ id: string }>('POST', '/plans', { strategy: 'size' })
    expect([size.status, (size.body as { strategy?: string }).strategy]).toEqual([201, 'size'])
    plans.push(size.body.id)

    const shown = await call('GET', `/plans/${made.body.id}`)
    expect(shown.status).toBe(200)
    expect(shown.body).toMatchObject({ id: made.body.id, moves: made.body.moves })

    // Applying for real is the executor's test (test/rebalance-apply.test.ts); here only its input.
    const apply = await call('POST', `/plans/${made.body.id}/apply`, { concurrency: 0 })
    expect([apply.status, apply.body.error?.code]).toEqual([400, 'invalid_input'])
    expect((await call('GET', `/plans/${made.body.id}`)).body.state).toBe('planned')
    const cancel = await call('POST', `/plans/${made.body.id}/cancel`)
    expect([cancel.status, cancel.body.state]).toEqual([200, 'cancelled'])
    expect(cancel.body.finishedAt).toEqual(expect.any(String))
    const again = await call('POST', `/plans/${made.body.id}/cancel`)
    expect([again.status, again.body.state]).toEqual([200, 'cancelled'])
    const applyCancelled = await call('POST', `/plans/${made.body.id}/apply`)
    expect([applyCancelled.status, applyCancelled.body.error?.code]).toEqual([409, 'plan_closed'])

    await directory()`update rebalance_plans set state = 'done' where id = ${size.body.id}`
    const cancelDone = await call('POST', `/plans/${size.body.id}/cancel`)
    expect([cancelDone.status, cancelDone.body.error?.code]).toEqual([409, 'plan_closed'])
  })

  it.each([
    ['POST', '/plans', { strategy: 'random' }, 400, 'invalid_input'],
    ['POST', '/plans', { strategy: 'count', extra: true }, 400, 'invalid_input'],
    ['POST', '/plans', 'not json', 400, 'invalid_json'],
    ['GET', '/plans/not-a-uuid', undefined, 400, 'invalid_input'],
    ['GET', `/plans/${someUuid}`, undefined, 404, 'plan_unknown'],
    ['POST', `/plans/${someUuid}/apply`, undefined, 404, 'plan_unknown'],
    ['POST', `/plans/${someUuid}/cancel`, undefined, 404, 'plan_unknown'],
    ['POST', '/plans/nope/cancel', undefined, 400, 'invalid_input'],
    ['GET', '/moves/nope', undefined, 400, 'invalid_input'],
    ['GET', `/moves/${someUuid}`, undefined, 404, 'move_unknown'],
  ])('%s %s %j → %i %s', async (method, path, body, status, code) => {
    const answer = await call(method, path, body)
    expect([answer.status, answer.body.error?.code]).toEqual([status, code])
  })

  it('GET /moves lists the directory’s moves (none before the mover exists)', async () => {
    const answer = await call<{ moves: unknown[] }>('GET', '/moves')
    expect(answer.status).toBe(200)
    const [count] = await directory()`select count(*)::int as n from moves`
    expect(answer.body.moves).toHaveLength(count?.n ?? 0)
  })
})
