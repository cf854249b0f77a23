import { execFile } from 'node:child_process'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { neonConfig } from '@neondatabase/serverless'
import { PrismaNeon } from '@prisma/adapter-neon'
import { PrismaPg } from '@prisma/adapter-pg'
import { describe, expect } from 'vitest'
import WebSocket from 'ws'
import type { RunningRouter } from '../src/router/server.ts'
import { it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'

/**
 * Prisma 7, the seed's ORM, unmodified, on the example schema through the router: with @prisma/adapter-pg
 * over the PostgreSQL port, and with @prisma/adapter-neon over its WebSocket. The client is generated
 * here, offline (the schema engine is not needed to generate; nothing is downloaded).
 */

const run = promisify(execFile)
const SCHEMA = path.resolve('examples/appointments/prisma/schema.prisma')
const GENERATED = path.resolve('examples/appointments/prisma/generated/client.ts')

// The generated client's surface this test uses (it does not exist until beforeAll generates it).
// biome-ignore lint/suspicious/noExplicitAny: the generated models' types exist only once generated
type Row = any
interface Delegate {
  create(args: unknown): Promise<Row>
  findMany(args: unknown): Promise<Row[]>
  update(args: unknown): Promise<Row>
}
interface Prisma {
  business: Delegate
  service: Delegate
  customer: Delegate
  appointment: Delegate
  $transaction(arg: unknown): Promise<Row>
  $disconnect(): Promise<void>
}
let PrismaClient: new (options: { adapter: unknown }) => Prisma
let router: RunningRouter
let tenant: TestTenant

it.beforeAll(async () => {
  await run(
    process.execPath,
    [path.resolve('node_modules/prisma/build/index.js'), 'generate', '--schema', SCHEMA],
    {
      env: {
        ...process.env,
        PRISMA_SCHEMA_ENGINE_BINARY: process.execPath,
        PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING: '1',
        PRISMA_HIDE_UPDATE_MESSAGE: '1',
      },
    },
  )
  ;({ PrismaClient } = await import(pathToFileURL(GENERATED).href))
  router = await startTestRouter({ rateLimitOverride: 1_000_000 })
  tenant = await tenantWithKey('shard-1')
})

const url = (port: number) =>
  `postgres://${tenant.id}:${encodeURIComponent(tenant.key)}@127.0.0.1:${port}/switchyard`

/** The seed's calls: create, findMany with include, update, a batch transaction and an interactive one. */
async function exercise(prisma: Prisma, label: string) {
  const tenantId = tenant.id
  const business = await prisma.business.create({ data: { tenantId, name: `${label} salon` } })
  const service = await prisma.service.create({
    data: { tenantId, businessId: business.id, name: 'cut', durationMinutes: 30, price: '25.50' },
  })
  const customer = await prisma.customer.create({
    data: { tenantId, name: `${label} customer`, email: 'c@example.com' },
  })
  const start = new Date('2027-03-01T10:00:00Z')
  const appointment = await prisma.appointment.create({
    data: {
      tenantId,
      businessId: business.id,
      serviceId: service.id,
      customerId: customer.id,
      startTime: start,
      endTime: new Date(start.getTime() + 30 * 60_000),
      metadata: { source: label },
    },
  })
  const listed = await prisma.appointment.findMany({
    where: { businessId: business.id },
    include: { customer: true, service: true },
  })
  expect(listed).toHaveLength(1)
  expect(listed[0].customer.name).toBe(`${label} customer`)
  expect(listed[0].service.price.toString()).toBe('25.5')
  expect(listed[0].metadata).toEqual({ source: label })

  const updated = await prisma.appointment.update({
    where: { tenantId_id: { tenantId, id: appointment.id } },
    data: { status: 'confirmed' },
  })
  expect(updated.status).toBe('confirmed')

  const [first, second] = await prisma.$transaction([
    prisma.customer.create({ data: { tenantId, name: `${label} batch 1` } }),
    prisma.customer.create({ data: { tenantId, name: `${label} batch 2` } }),
  ])
  expect([first.name, second.name]).toEqual([`${label} batch 1`, `${label} batch 2`])

  const thrown = await prisma
    .$transaction(async (tx: Prisma) => {
      await tx.customer.create({ data: { tenantId, name: `${label} never` } })
      const seen = await tx.customer.findMany({ where: { name: `${label} never` } })
      expect(seen).toHaveLength(1)
      throw new Error('roll it back')
    })
    .catch((error: Error) => error.message)
  expect(thrown).toBe('roll it back')
  expect(await prisma.customer.findMany({ where: { name: `${label} never` } })).toHaveLength(0)
  const kept = await prisma.$transaction(async (tx: Prisma) =>
    tx.customer.create({ data: { tenantId, name: `${label} interactive` } }),
  )
  expect(await prisma.customer.findMany({ where: { id: kept.id } })).toHaveLength(1)
}

describe('Prisma 7 through the router', () => {
  it('@prisma/adapter-pg over the PostgreSQL port', async () => {
    const prisma = new PrismaClient({
      adapter: new PrismaPg({ connectionString: url(router.pgPort as number) }),
    })
    try {
      await exercise(prisma, 'pg')
    } finally {
      await prisma.$disconnect()
    }
  })

  it("@prisma/adapter-neon's PrismaNeon over the WebSocket", async () => {
    neonConfig.webSocketConstructor = WebSocket
    neonConfig.useSecureWebSocket = false
    neonConfig.pipelineConnect = false
    neonConfig.wsProxy = () => `127.0.0.1:${router.port}/v2`
    const prisma = new PrismaClient({ adapter: new PrismaNeon({ connectionString: url(router.port) }) })
    try {
      await exercise(prisma, 'neon')
    } finally {
      await prisma.$disconnect()
    }
  })
})
