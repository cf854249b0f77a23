import { describe, expect, it } from 'vitest'
import { createAdmission } from '../../src/router/admission.ts'

/** A quota of `n` for statements that name no API request (as every request here). */
const untagged = (n: number) => ({ apiRequests: n, statements: n, perApiRequest: n })

// Admission without Redis: what a router does alone (and falls back to when Redis is gone). The shared
// counting through Redis is tested against a real Redis in test/router.test.ts.

describe('admission without Redis', () => {
  it('admits exactly `limit` requests of a tenant in the window, then refuses with rate_limited', async () => {
    const admission = createAdmission(undefined)
    const answers = []
    for (let i = 0; i < 3; i++) answers.push(await admission.admit('tenant-a', 'shard-1', untagged(3)))
    expect(answers.map((a) => a.remaining)).toEqual([2, 1, 0])
    expect(answers.every((a) => a.resetSeconds > 0 && a.resetSeconds <= 3600)).toBe(true)
    await expect(admission.admit('tenant-a', 'shard-1', untagged(3))).rejects.toMatchObject({
      code: 'rate_limited',
      details: { limit: 3 },
    })
    // Refused once: the router turns the tenant away before it costs a shard anything.
    expect(admission.overLimit('tenant-a')).toBe(true)
  })

  it("counts each tenant apart: one tenant over its limit does not touch another's", async () => {
    const admission = createAdmission(undefined)
    await admission.admit('tenant-a', 'shard-1', untagged(1))
    await expect(admission.admit('tenant-a', 'shard-1', untagged(1))).rejects.toMatchObject({
      code: 'rate_limited',
    })
    expect(admission.overLimit('tenant-b')).toBe(false)
    expect((await admission.admit('tenant-b', 'shard-1', untagged(1))).remaining).toBe(0)
  })

  it('counts API requests once each: their statements pass, a new one past the limit is refused', async () => {
    const admission = createAdmission(undefined)
    const quota = (request?: string) => ({ apiRequests: 2, statements: 3, perApiRequest: 100, request })
    const remaining = []
    for (const request of ['a', 'a', 'b', 'a', 'b', 'b'])
      remaining.push((await admission.admit('tenant-a', 'shard-1', quota(request))).remaining)
    expect(remaining).toEqual([1, 1, 0, 0, 0, 0])
    await expect(admission.admit('tenant-a', 'shard-1', quota('c'))).rejects.toMatchObject({
      code: 'rate_limited',
      details: { limit: 2 },
      message: expect.stringContaining('2 API requests per hour'),
    })
    // Still passing: statements of the API requests already counted, and the untagged budget apart.
    expect((await admission.admit('tenant-a', 'shard-1', quota('a'))).remaining).toBe(0)
    for (let i = 0; i < 3; i++) await admission.admit('tenant-a', 'shard-1', quota())
    await expect(admission.admit('tenant-a', 'shard-1', quota())).rejects.toMatchObject({
      code: 'rate_limited',
      details: { limit: 3 },
      message: expect.stringContaining('x-switchyard-request'),
    })
  })

  it('one API request makes at most perApiRequest requests; the rest count against the budget', async () => {
    const admission = createAdmission(undefined)
    const quota = { apiRequests: 5, statements: 2, perApiRequest: 3, request: 'same' }
    const limits = []
    for (let i = 0; i < 5; i++) limits.push((await admission.admit('tenant-a', 'shard-1', quota)).limit)
    expect(limits).toEqual([5, 5, 5, 2, 2])
    await expect(admission.admit('tenant-a', 'shard-1', quota)).rejects.toMatchObject({
      code: 'rate_limited',
      details: { limit: 2 },
    })
  })

  it('keeps the highest write LSN per tenant and shard, whatever order writes are recorded in', async () => {
    const admission = createAdmission(undefined)
    await admission.recordWrite('tenant-a', 'shard-1', 200n)
    await admission.recordWrite('tenant-a', 'shard-1', 100n)
    await admission.recordWrite('tenant-a', 'shard-2', 50n)
    expect(admission.localLastWrite('tenant-a', 'shard-1')).toBe(200n)
    expect(admission.localLastWrite('tenant-a', 'shard-2')).toBe(50n)
    expect(admission.localLastWrite('tenant-b', 'shard-1')).toBeNull()
    expect((await admission.admit('tenant-a', 'shard-1', untagged(10))).lastWriteLsn).toBe(200n)
    expect((await admission.admit('tenant-b', 'shard-1', untagged(10))).lastWriteLsn).toBeNull()
  })
})
