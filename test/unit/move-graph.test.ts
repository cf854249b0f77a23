import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { SwitchyardError } from '../../src/errors.ts'
import { drive, GRAPH, mayAbort, mayGo, PHASES, type Steps } from '../../src/migrate-tenant/mover.ts'
import type { MoveRun, StepResult } from '../../src/migrate-tenant/phases/context.ts'
import { FINISHED, type MoveState, type Running } from '../../src/migrate-tenant/record.ts'

// The move's graph and runner, driven with a fake move and fake steps: no shard, no directory. Each
// test reads the record of what the runner did, in order: steps run, unfences, saves of a new state.

const RUNNING = Object.keys(GRAPH) as Running[]

function fakeMove(state: MoveState) {
  const events: string[] = []
  const run: MoveRun = {
    move: {
      id: 'move-1',
      tenantId: 'tenant-1',
      sourceShard: 'shard-1',
      targetShard: 'shard-2',
      state,
      fenceLsn: null,
      cutoverLsn: null,
      progress: {},
      error: null,
      createdAt: new Date(),
      updatedAt: new Date(),
      finishedAt: null,
    },
    deps: {
      logger: pino({ level: 'silent' }),
      failpoint: (at, when) => {
        if (when === 'after') events.push(`after ${at}`)
      },
    },
    async save(change, commit) {
      if (commit) await commit(undefined as never)
      if (change.state !== undefined) events.push(`→ ${change.state}${commit ? ' (with commit)' : ''}`)
      run.move = { ...run.move, ...change, progress: { ...run.move.progress, ...change.progress } }
      return run.move
    },
    async unfence() {
      events.push('unfence')
    },
  }
  return { run, events }
}

/** Steps that each take their phase's first edge (forward), noting that they ran; `change` overrides. */
function steps(
  events: string[],
  change: Partial<Record<Running, () => Promise<StepResult>>> = {},
): Steps<MoveRun> {
  const entries = RUNNING.map((state) => [
    state,
    async () => {
      events.push(`step ${state}`)
      return change[state]?.() ?? { next: GRAPH[state].to[0] }
    },
  ])
  return Object.fromEntries(entries) as Steps<MoveRun>
}

const states = (events: string[]) => events.filter((e) => e.startsWith('→'))

describe('the move graph', () => {
  it('every edge leads to a state the graph knows, and every phase reaches done', () => {
    for (const state of RUNNING)
      for (const to of GRAPH[state].to) expect([...RUNNING, ...FINISHED]).toContain(to)
    const reaches = (from: MoveState, seen = new Set<MoveState>()): boolean =>
      FINISHED.includes(from) ||
      (!seen.has(from) && GRAPH[from as Running].to.some((to) => reaches(to, seen.add(from))))
    for (const state of RUNNING) expect(reaches(state), state).toBe(true)
    expect(PHASES).toEqual([...RUNNING.filter((s) => s !== 'aborting'), 'done'])
  })

  it('a move may be aborted until its cutover, not after; no step may take that edge itself', () => {
    const before = PHASES.slice(0, PHASES.indexOf('cleanup'))
    for (const state of before) expect(mayAbort(state), state).toBe(true)
    for (const state of ['cleanup', 'aborting', 'done', 'aborted'] as const)
      expect(mayAbort(state), state).toBe(false)
    for (const state of RUNNING) expect(mayGo(state, 'aborting'), state).toBe(false)
  })

  it('a step that says aborting is refused: only the operator aborts, after checking the cutover', async () => {
    const { run, events } = fakeMove('verify')
    const verify = async (): Promise<StepResult> => ({ next: 'aborting' })
    await expect(drive(run, steps(events, { verify }))).rejects.toMatchObject({ code: 'move_broken' })
    expect(states(events).at(-1)).toBe('→ verify')
  })

  it('runs a move from preflight to done along the forward edges, never unfencing', async () => {
    const { run, events } = fakeMove('preflight')
    const done = await drive(run, steps(events))
    expect(done.state).toBe('done')
    expect(states(events)).toEqual(PHASES.slice(1).map((state) => `→ ${state}`))
    expect(events).not.toContain('unfence')
  })

  it('a verify mismatch goes back to catch-up, unfenced, and the move waits there with the error', async () => {
    const { run, events } = fakeMove('catch_up')
    const mismatch = new SwitchyardError('verify_failed', 'the copies differ')
    const verify = async (): Promise<StepResult> => ({
      back: 'catch_up',
      reason: 'verify failed',
      error: 'verify failed: customers',
      waits: mismatch,
    })
    await expect(drive(run, steps(events, { verify }))).rejects.toBe(mismatch)
    expect(events).toEqual([
      'step catch_up',
      'after catch_up',
      '→ fence',
      'step fence',
      'after fence',
      '→ final_catch_up',
      'step final_catch_up',
      'after final_catch_up',
      '→ verify',
      'step verify',
      'unfence',
      '→ catch_up',
    ])
    expect(run.move).toMatchObject({ state: 'catch_up', error: 'verify failed: customers' })
  })

  it('a move resumed at verify goes back to catch-up, unfenced, before it fences again', async () => {
    const { run, events } = fakeMove('verify')
    await drive(run, steps(events))
    expect(events.slice(0, 6)).toEqual([
      'unfence',
      '→ catch_up',
      'step catch_up',
      'after catch_up',
      '→ fence',
      'step fence',
    ])
    expect(events.filter((e) => e === 'step verify')).toHaveLength(1)
    expect(run.move.state).toBe('done')
  })

  it('an error while fenced goes back to catch-up, unfenced, and is thrown', async () => {
    const { run, events } = fakeMove('final_catch_up')
    const finalCatchUp = async (): Promise<StepResult> => {
      throw new Error('the source stopped answering')
    }
    // Resumed at final_catch_up: back to catch-up first, then forward, then the error.
    await expect(drive(run, steps(events, { final_catch_up: finalCatchUp }))).rejects.toThrow(
      /stopped answering/,
    )
    expect(events.slice(-4)).toEqual(['→ final_catch_up', 'step final_catch_up', 'unfence', '→ catch_up'])
    expect(run.move.state).toBe('catch_up')
  })

  it('an error in the fence goes back to catch-up, unfenced, and is thrown', async () => {
    const { run, events } = fakeMove('catch_up')
    const fence = async (): Promise<StepResult> => {
      throw new Error('Redis is gone: routers cannot be told')
    }
    await expect(drive(run, steps(events, { fence }))).rejects.toThrow(/Redis is gone/)
    expect(events.slice(-3)).toEqual(['step fence', 'unfence', '→ catch_up'])
    expect(run.move.state).toBe('catch_up')
  })

  it('an unfence that fails after an error leaves the state where it was and throws the first error', async () => {
    const { run, events } = fakeMove('catch_up')
    run.unfence = async () => {
      throw new Error('this runner no longer holds the move')
    }
    const verify = async (): Promise<StepResult> => {
      throw new Error('the target stopped answering')
    }
    await expect(drive(run, steps(events, { verify }))).rejects.toThrow(/target stopped answering/)
    expect(events.slice(-2)).toEqual(['→ verify', 'step verify'])
    expect(run.move.state).toBe('verify')
  })

  it('an error before the fence leaves the move where it was, fenced phases aside', async () => {
    const { run, events } = fakeMove('copy')
    const copy = async (): Promise<StepResult> => {
      throw new Error('the copy broke')
    }
    await expect(drive(run, steps(events, { copy }))).rejects.toThrow(/copy broke/)
    expect(events).toEqual(['step copy'])
    expect(run.move.state).toBe('copy')
  })

  it('going back to the fence from inside it does not unfence (the fence step fences again)', async () => {
    const { run, events } = fakeMove('flip')
    let first = true
    const flip = async (): Promise<StepResult> => {
      if (!first) return { next: 'cleanup' }
      first = false
      return { back: 'fence', reason: 'the source is not fenced' }
    }
    await drive(run, steps(events, { flip }))
    expect(events.slice(0, 4)).toEqual(['step flip', 'after flip', '→ fence', 'step fence'])
    expect(events).not.toContain('unfence')
    expect(run.move.state).toBe('done')
  })

  it('refuses an edge the graph does not have, and the state stays', async () => {
    const { run, events } = fakeMove('copy')
    const copy = async (): Promise<StepResult> => ({ next: 'flip' })
    await expect(drive(run, steps(events, { copy }))).rejects.toMatchObject({ code: 'move_broken' })
    expect(states(events)).toEqual([])
    expect(run.move.state).toBe('copy')
  })

  it("a step's commit goes with its new state, and its failpoint 'after' and afterSave come after the commit", async () => {
    const { run, events } = fakeMove('flip')
    const flip = async (): Promise<StepResult> => ({
      next: 'cleanup',
      commit: async () => {
        events.push('commit')
      },
      afterSave: async () => {
        events.push('routers told')
      },
    })
    await drive(run, steps(events, { flip }))
    expect(events.slice(0, 5)).toEqual([
      'step flip',
      'commit',
      '→ cleanup (with commit)',
      'routers told',
      'after flip',
    ])
  })
})
