import { z } from 'zod'

const postgresUrl = z
  .string()
  .url()
  .refine((url) => /^postgres(ql)?:\/\//.test(url), 'must be a postgres:// URL')
const redisUrl = z
  .string()
  .url()
  .refine((url) => /^rediss?:\/\//.test(url), 'must be a redis:// URL')
const port = z.coerce.number().int().min(1).max(65535)

export const shardId = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,62}$/, 'must be lowercase letters, digits and dashes, starting with a letter')

export const shardSchema = z.strictObject({
  id: shardId,
  primary: postgresUrl,
  replicas: z.array(postgresUrl).default([]),
  /** Tenants the shard may hold; the seed plans about 100 per database. */
  capacity: z.number().int().positive().default(100),
  state: z.enum(['active', 'draining']).default('active'),
})

export const topologySchema = z
  .strictObject({
    /** Admin URL of the directory database (the source of truth). */
    directory: postgresUrl,
    /** Redis for caches, invalidation, rate limits. Optional: everything degrades to process-local. */
    redis: redisUrl.optional(),
    router: z
      .strictObject({
        port: port.default(8080),
        /** The role the router uses on shards: never owner, superuser or BYPASSRLS. */
        role: z
          .strictObject({
            name: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/),
            password: z.string().min(1),
          })
          .default({ name: 'switchyard_router', password: 'switchyard_router' }),
      })
      .prefault({}),
    /** The tenant schema applied to every shard: drizzle migrations and the schemas holding tenant tables. */
    tenantSchema: z
      .strictObject({
        migrations: z.string().min(1),
        schemas: z.array(z.string().min(1)).min(1).default(['public']),
      })
      .default({ migrations: 'examples/appointments/migrations', schemas: ['public'] }),
    shards: z.array(shardSchema).min(1),
  })
  .superRefine((topology, ctx) => {
    const seen = new Set<string>()
    topology.shards.forEach((shard, index) => {
      if (seen.has(shard.id)) {
        ctx.addIssue({
          code: 'custom',
          path: ['shards', index, 'id'],
          message: `duplicate shard id "${shard.id}"`,
        })
      }
      seen.add(shard.id)
    })
  })

export type TopologyInput = z.input<typeof topologySchema>
export type Topology = z.output<typeof topologySchema>
export type Shard = z.output<typeof shardSchema>

/** Types `shards.config.ts`; validation happens when the config is loaded, with env overrides applied. */
export function defineTopology(topology: TopologyInput): TopologyInput {
  return topology
}
