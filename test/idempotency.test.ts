import { randomUUID } from 'node:crypto'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { describe, expect } from 'vitest'
import { startMove } from '../src/migrate-tenant/mover.ts'
import { type RunningRouter, startRouter } from '../src/router/server.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { moverDeps } from './move-support.ts'
import { type Answer, post } from './router-support.ts'
import { eventually, shard, topology } from './support.ts'

/**
 * Issue 12, Build 4: honest outcomes for writes. A write whose COMMIT may have reached the shard is
 * never answered as retry-safe (502 commit_unknown); an Idempotency-Key makes a retry exactly-once: the
 * key is claimed and answered in the write's own transaction on the shard, and moves with the tenant.
 */

let router: RunningRouter

it.beforeAll(async () => {
  router = await startTestRouter({ requestTimeoutMs: 10_000 })
})
// A killed connection marks the primary down until the router's next health poll finds it answering.
it.beforeEach(async () => {
  await eventually(async () => (router.app.monitor.health('shard-1-primary').healthy ? true : undefined))
})

const INSERT = 'insert into businesses (tenant_id, name) values ($1, $2) returning id, name'

function write(
  tenant: TestTenant,
  sql: string,
  params: unknown[],
  key?: string,
): Promise<Answer<{ rows?: unknown[]; error?: { code: string; message: string } }>> {
  return post(
    router,
    '/v1/query',
    { sql, params, method: 'all' },
    {
      authorization: `Bearer ${tenant.key}`,
      'x-tenant-id': tenant.id,
      ...(key ? { 'idempotency-key': key } : {}),
    },
  )
}

async function businesses(on: string, tenant: TestTenant, name: string): Promise<number> {
  const [row] = await connect(shard(on).primary)<{ n: number }[]>`
    select count(*)::int as n from businesses where tenant_id = ${tenant.id} and name = ${name}`
  return row?.n ?? -1
}

/** Ends the router's backend running `marker`'s statement on the primary, as an operator (or a crash) would. */
async function killWhileRunning(marker: string): Promise<void> {
  const admin = connect(shard('shard-1').primary)
  const pid = await eventually(async () => {
    const [row] = await admin<{ pid: number }[]>`
      select pid from pg_stat_activity where query like ${`%${marker}%`} and pid <> pg_backend_pid()`
    return row?.pid
  })
  await admin`select pg_terminate_backend(${pid})`
}

describe('a write whose outcome is unknown', () => {
  it('a shard connection lost after COMMIT was sent yields 502 commit_unknown, never a retry-safe 503', async () => {
    const tenant = await tenantWithKey('shard-1')
    const marker = `unknown-${randomUUID()}`
    const pending = write(
      tenant,
      `/* ${marker} */ insert into businesses (tenant_id, name) select $1, $2 from pg_sleep(1) returning id`,
      [tenant.id, marker],
    )
    await killWhileRunning(marker)
    const answer = await pending
    console.log(`connection killed mid-write: ${answer.status} ${answer.body.error?.code}`)
    expect(answer.status).toBe(502)
    expect(answer.body.error?.code).toBe('commit_unknown')
    expect(answer.headers.get('retry-after')).toBeNull()
    expect(answer.body.error?.message).toMatch(/Idempotency-Key/)
  })

  it('with an Idempotency-Key, a connection lost mid-write is safe to retry with the key: it writes once', async () => {
    const tenant = await tenantWithKey('shard-1')
    const marker = `retried-${randomUUID()}`
    const key = randomUUID()
    const sql = `/* ${marker} */ insert into businesses (tenant_id, name) select $1, $2 from pg_sleep(0.5) returning name`
    const pending = write(tenant, sql, [tenant.id, marker], key)
    await killWhileRunning(marker)
    // With a key the COMMIT goes out only after the statements answered: lost before it, nothing was
    // written and the error says retry (503); lost after it, commit_unknown. Either way: retry with the key.
    const lost = await pending
    console.log(`connection killed mid-write, with a key: ${lost.status} ${lost.body.error?.code}`)
    expect(['shard_unavailable', 'commit_unknown']).toContain(lost.body.error?.code)
    const retried = await eventually(async () => {
      const answer = await write(tenant, sql, [tenant.id, marker], key)
      return answer.status === 503 ? undefined : answer
    })
    expect(retried.status).toBe(200)
    expect(retried.body.rows).toEqual([[marker]])
    const again = await write(tenant, sql, [tenant.id, marker], key)
    expect(again.status).toBe(200)
    expect(again.headers.get('x-switchyard-idempotent-replay')).toBe('true')
    expect(again.body.rows).toEqual([[marker]])
    expect(await businesses('shard-1', tenant, marker)).toBe(1)
  })
})

/**
 * A plain TCP relay in front of `target` that forwards both ways, except that once armed it ends the
 * first connection whose server->client bytes carry COMMIT's CommandComplete ('C', int32 length,
 * 'COMMIT\0'): it destroys both sockets without forwarding that chunk. The COMMIT ran on the shard;
 * its answer never reaches the client. An SSLRequest is answered 'N' (the relay must see plaintext).
 */
async function startCommitCutter(target: { host: string; port: number }) {
  const COMMIT_COMPLETE = Buffer.from('COMMIT\0')
  const sockets = new Set<Socket>()
  const state = { armed: false, cut: 0 }
  const server: Server = createServer((client) => {
    const upstream = netConnect(target)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    let first = true
    client.on('data', (chunk: Buffer) => {
      if (first) {
        first = false
        if (chunk.length >= 8 && chunk.readInt32BE(0) === 8 && chunk.readInt32BE(4) === 80877103) {
          client.write('N')
          chunk = chunk.subarray(8)
        }
      }
      if (chunk.length) upstream.write(chunk)
    })
    // Server messages are parsed across chunks, only to find CommandComplete; chunks go on unchanged.
    let unparsed = Buffer.alloc(0)
    upstream.on('data', (chunk: Buffer) => {
      unparsed = Buffer.concat([unparsed, chunk])
      let commit = false
      while (unparsed.length >= 5) {
        const end = 1 + unparsed.readInt32BE(1)
        if (unparsed.length < end) break
        if (unparsed[0] === 0x43 && unparsed.subarray(5, end).equals(COMMIT_COMPLETE)) commit = true
        unparsed = unparsed.subarray(end)
      }
      if (commit && state.armed) {
        state.armed = false
        state.cut++
        client.destroy()
        upstream.destroy()
        return
      }
      client.write(chunk)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as { port: number }).port,
    state,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

describe('a COMMIT that committed on the shard and whose answer was lost', () => {
  it('is 502 commit_unknown, never a retry-safe 503; the retry with the same Idempotency-Key returns the first answer and inserts once', async () => {
    const primary = new URL(shard('shard-1').primary)
    const cutter = await startCommitCutter({ host: primary.hostname, port: Number(primary.port) })
    const base = topology()
    const relayedPrimary = new URL(primary)
    relayedPrimary.port = String(cutter.port)
    // A router whose shard-1 primary is the relay, without TLS so the relay reads the protocol.
    const relayed = await startRouter(
      {
        ...base,
        shards: base.shards.map((s) =>
          s.id === 'shard-1' ? { ...s, primary: relayedPrimary.toString() } : s,
        ),
        router: {
          ...base.router,
          tls: { mode: 'disable', channelBinding: 'disable' },
          requestTimeoutMs: 10_000,
          moveRescueIntervalMs: 0,
        },
      },
      { port: 0 },
    )
    try {
      await eventually(async () => (relayed.app.monitor.health('shard-1-primary').healthy ? true : undefined))
      const tenant = await tenantWithKey('shard-1')
      const name = `committed-${randomUUID()}`
      const key = randomUUID()
      const request = { sql: INSERT, params: [tenant.id, name], method: 'all' }
      const headers = {
        authorization: `Bearer ${tenant.key}`,
        'x-tenant-id': tenant.id,
        'idempotency-key': key,
      }
      cutter.state.armed = true
      const lost = await post<{ error?: { code: string; message: string } }>(
        relayed,
        '/v1/query',
        request,
        headers,
      )
      const afterLoss = await businesses('shard-1', tenant, name)
      console.log(
        `COMMIT's answer cut by the relay (${cutter.state.cut}x): ${lost.status} ${lost.body.error?.code}; rows on the shard: ${afterLoss}`,
      )
      expect(cutter.state.cut).toBe(1)
      // The write did commit: only its answer was lost.
      expect(afterLoss).toBe(1)
      expect(lost.status).toBe(502)
      expect(lost.body.error?.code).toBe('commit_unknown')
      expect(lost.headers.get('retry-after')).toBeNull()

      const retried = await write(tenant, INSERT, [tenant.id, name], key)
      const [row] = await connect(shard('shard-1').primary)<{ id: string }[]>`
        select id::text as id from businesses where tenant_id = ${tenant.id} and name = ${name}`
      const rows = await businesses('shard-1', tenant, name)
      console.log(
        `retry with the same key: ${retried.status}, replay ${retried.headers.get('x-switchyard-idempotent-replay')}, rows ${JSON.stringify(retried.body.rows)}; rows on the shard: ${rows}`,
      )
      expect(retried.status, JSON.stringify(retried.body)).toBe(200)
      expect(retried.headers.get('x-switchyard-idempotent-replay')).toBe('true')
      expect(retried.body.rows).toEqual([[row?.id, name]])
      expect(rows).toBe(1)
    } finally {
      await relayed.close()
      await cutter.close()
    }
  })
})

describe('Idempotency-Key', () => {
  it('a retry returns the first answer and inserts once', async () => {
    const tenant = await tenantWithKey('shard-1')
    const key = randomUUID()
    const first = await write(tenant, INSERT, [tenant.id, 'Once'], key)
    expect(first.status, JSON.stringify(first.body)).toBe(200)
    expect(first.headers.get('x-switchyard-idempotent-replay')).toBeNull()
    const second = await write(tenant, INSERT, [tenant.id, 'Once'], key)
    expect(second.status).toBe(200)
    expect(second.headers.get('x-switchyard-idempotent-replay')).toBe('true')
    expect(second.body).toEqual(first.body)
    expect(await businesses('shard-1', tenant, 'Once')).toBe(1)
    // Without a key, the same request is a new write.
    expect((await write(tenant, INSERT, [tenant.id, 'Once'])).status).toBe(200)
    expect(await businesses('shard-1', tenant, 'Once')).toBe(2)
  })

  it('the same key for another request is refused with 422 idempotency_key_reused', async () => {
    const tenant = await tenantWithKey('shard-1')
    const key = randomUUID()
    expect((await write(tenant, INSERT, [tenant.id, 'First'], key)).status).toBe(200)
    const other = await write(tenant, INSERT, [tenant.id, 'Second'], key)
    expect(other.status).toBe(422)
    expect(other.body.error?.code).toBe('idempotency_key_reused')
    expect(await businesses('shard-1', tenant, 'Second')).toBe(0)
  })

  it("keys are per tenant: another tenant's request with the same key runs", async () => {
    const [a, b] = [await tenantWithKey('shard-1'), await tenantWithKey('shard-1')]
    const key = randomUUID()
    expect((await write(a, INSERT, [a.id, 'Shared key'], key)).status).toBe(200)
    const answer = await write(b, INSERT, [b.id, 'Shared key'], key)
    expect(answer.status).toBe(200)
    expect(answer.headers.get('x-switchyard-idempotent-replay')).toBeNull()
    expect(await businesses('shard-1', b, 'Shared key')).toBe(1)
  })

  it('ten concurrent requests with one key insert once and all get the same answer', async () => {
    const tenant = await tenantWithKey('shard-1')
    const key = randomUUID()
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => write(tenant, INSERT, [tenant.id, 'Concurrent'], key)),
    )
    expect(answers.map((answer) => answer.status)).toEqual(Array(10).fill(200))
    expect(new Set(answers.map((answer) => JSON.stringify(answer.body))).size).toBe(1)
    expect(answers.filter((answer) => answer.headers.get('x-switchyard-idempotent-replay'))).toHaveLength(9)
    expect(await businesses('shard-1', tenant, 'Concurrent')).toBe(1)
  })

  it('a failed write leaves its key free: the retry runs', async () => {
    const tenant = await tenantWithKey('shard-1')
    const key = randomUUID()
    const failing = await write(tenant, INSERT, [tenant.id, null], key)
    expect(failing.status).toBe(400)
    expect((await write(tenant, INSERT, [tenant.id, null], key)).status).toBe(400)
  })

  it('a bad key is refused with 400 invalid_input', async () => {
    const tenant = await tenantWithKey('shard-1')
    const answer = await write(tenant, INSERT, [tenant.id, 'x'], 'has spaces in it')
    expect(answer.status).toBe(400)
    expect(answer.body.error?.code).toBe('invalid_input')
  })

  it('a retry after the tenant moved to another shard still returns the first answer', async ({
    directory,
  }) => {
    const tenant = await tenantWithKey('shard-1')
    const key = randomUUID()
    const first = await write(tenant, INSERT, [tenant.id, 'Before the move'], key)
    expect(first.status).toBe(200)
    const move = await startMove(moverDeps(directory), { tenant: tenant.id, target: 'shard-3' })
    expect(move.state).toBe('done')
    const retried = await eventually(async () => {
      const answer = await write(tenant, INSERT, [tenant.id, 'Before the move'], key)
      return answer.headers.get('x-switchyard-shard') === 'shard-3' ? answer : undefined
    })
    expect(retried.status).toBe(200)
    expect(retried.headers.get('x-switchyard-idempotent-replay')).toBe('true')
    expect(retried.body).toEqual(first.body)
    expect(await businesses('shard-3', { ...tenant }, 'Before the move')).toBe(1)
    expect(await businesses('shard-1', { ...tenant }, 'Before the move')).toBe(0)
  })
})
