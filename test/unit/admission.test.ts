import { describe, expect, it } from 'vitest'
import { createAdmission } from '../../src/router/admission.ts'

// Admission without Redis: what a router does alone (and falls back to when Redis is gone). The shared
// counting through Redis is tested against a real Redis in test/router.test.ts.

describe('admission without Redis', () => {
  it('admits exactly `limit` requests of a tenant in the window, then refuses with rate_limited', async () => {
    const admission = createAdmission(undefined)
    const answers = []
    for (let i = 0; i < 3; i++) answers.push(await admission.admit('tenant-a', 'shard-1', 3))
    expect(answers.map((a) => a.remaining)).toEqual([2, 1, 0])
    expect(answers.every((a) => a.resetSeconds > 0 && a.resetSeconds <= 3600)).toBe(true)
    await expect(admission.admit('tenant-a', 'shard-1', 3)).rejects.toMatchObject({
      code: 'rate_limited',
      details: { limit: 3 },
    })
    // Refused once: the router turns the tenant away before it costs a shard anything.
    expect(admission.overLimit('tenant-a')).toBe(true)
  })

  it("counts each tenant apart: one tenant over its limit does not touch another's", async () => {
    const admission = createAdmission(undefined)
    await admission.admit('tenant-a', 'shard-1', 1)
    await expect(admission.admit('tenant-a', 'shard-1', 1)).rejects.toMatchObject({ code: 'rate_limited' })
    expect(admission.overLimit('tenant-b')).toBe(false)
    expect((await admission.admit('tenant-b', 'shard-1', 1)).remaining).toBe(0)
  })

  it('keeps the highest write LSN per tenant and shard, whatever order writes are recorded in', async () => {
    const admission = createAdmission(undefined)
    await admission.recordWrite('tenant-a', 'shard-1', 200n)
    await admission.recordWrite('tenant-a', 'shard-1', 100n)
    await admission.recordWrite('tenant-a', 'shard-2', 50n)
    expect(admission.localLastWrite('tenant-a', 'shard-1')).toBe(200n)
    expect(admission.localLastWrite('tenant-a', 'shard-2')).toBe(50n)
    expect(admission.localLastWrite('tenant-b', 'shard-1')).toBeNull()
    expect((await admission.admit('tenant-a', 'shard-1', 10)).lastWriteLsn).toBe(200n)
    expect((await admission.admit('tenant-b', 'shard-1', 10)).lastWriteLsn).toBeNull()
  })
})
