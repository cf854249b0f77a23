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

/** The longest a cached answer lives (a week), whatever a table or a request asks. */
export const MAX_CACHE_SECONDS = 604_800
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

/** As libpq's sslmode, sslrootcert and channel_binding, for the router's connections to shard nodes. */
export const routerTlsSchema = z
  .strictObject({
    /**
     * `disable`; `prefer` (TLS when the node offers it, unverified); `require` (TLS or refuse; verified
     * against `rootCert` when one is given); `verify-ca` (the certificate chains to `rootCert`);
     * `verify-full` (and names the host in the node's URL).
     */
    mode: z.enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']).default('prefer'),
    /** PEM file of the CA to trust (`cluster up` makes one: .switchyard/tls/ca.crt); else Node's roots. */
    rootCert: z.string().min(1).optional(),
    /** SCRAM-SHA-256-PLUS over TLS: `prefer` uses it whenever the node offers it, `require` refuses logins without it. */
    channelBinding: z.enum(['disable', 'prefer', 'require']).default('prefer'),
  })
  .refine((tls) => !(tls.channelBinding === 'require' && tls.mode === 'disable'), {
    message: 'channelBinding require needs TLS (mode is disable)',
    path: ['channelBinding'],
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
        /** Where the router listens; 0.0.0.0 to serve other machines. */
        host: z.string().min(1).default('127.0.0.1'),
        /**
         * The PostgreSQL front end's port (PgBouncer's and PgDog's 6432), on `host`; null turns it off.
         * 0 lets the system choose (tests).
         */
        pgPort: z
          .preprocess(
            (value) => (value === 'off' ? null : value),
            z.union([z.null(), z.coerce.number().int().min(0).max(65535)]),
          )
          .default(6432),
        /**
         * TLS for PostgreSQL clients (an SSLRequest is answered 'S'): PEM files read once at start. Without
         * it the router answers 'N' and clients go on in plain text (their API key is never sent: SCRAM).
         * `required` refuses a login that did not start TLS (28000).
         */
        pgTls: z
          .strictObject({
            certFile: z.string().min(1),
            keyFile: z.string().min(1),
            required: z.boolean().default(false),
          })
          .optional(),
        /** PostgreSQL clients served at once; past it a new one gets 53300 and is closed. */
        wireMaxClients: z.coerce.number().int().min(1).default(1000),
        /**
         * The longest a PostgreSQL client's transaction block may last, busy or not (then 25P04 and the
         * session ends): an open block holds back vacuum on its shard for every tenant there.
         */
        wireMaxTransactionMs: z.coerce.number().int().min(1).default(60_000),
        /**
         * PostgreSQL clients connected but not logged in yet (they have proven nothing), within
         * wireMaxClients; past it a new connection is refused at once (53300).
         */
        wireMaxLogins: z.coerce.number().int().min(1).default(200),
        /** PostgreSQL sessions one tenant may hold on one router; past it, FATAL 53300 at login. */
        wireMaxClientsPerTenant: z.coerce.number().int().min(1).default(100),
        /** A PostgreSQL client must have logged in this long after it connected. */
        wireLoginTimeoutMs: z.coerce.number().int().min(100).default(10_000),
        /**
         * A PostgreSQL client idle this long inside BEGIN … COMMIT is disconnected (25P03): its block holds
         * a connection of the tenant's share and the tenant's fence lock, which a move's cutover waits for.
         */
        wireIdleInTransactionMs: z.coerce.number().int().min(100).default(10_000),
        /** How often a PostgreSQL session asks the directory whether its API key was revoked. */
        wireKeyRecheckMs: z.coerce.number().int().min(100).default(30_000),
        /** The role the router uses on shards: never owner, superuser or BYPASSRLS. */
        role: z
          .strictObject({
            name: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/),
            password: z.string().min(1),
          })
          .default({ name: 'switchyard_router', password: 'switchyard_router' }),
        /** Connections per shard node (the seed keeps pools at 20–50). */
        poolSize: z.coerce.number().int().min(1).max(500).default(20),
        /** The server's own backstop (statement_timeout on every router session). */
        statementTimeoutMs: z.coerce.number().int().min(1).default(30_000),
        /**
         * A request's deadline, from its arrival: past it the shard's query is cancelled and the client
         * gets 504 `query_timeout` (a write that may have committed: 502 `commit_unknown`).
         */
        requestTimeoutMs: z.coerce.number().int().min(1).default(30_000),
        /** The longest wait for a free connection of a node's pool: past it, 503 `pool_timeout`. */
        poolWaitMs: z.coerce.number().int().min(1).default(2_000),
        /**
         * Connections of one node a tenant's transactions may hold at once (default: a quarter of
         * `poolSize`, at least 1): one tenant can never take a whole pool.
         */
        tenantConnections: z.coerce.number().int().min(1).optional(),
        /** A tenant's transactions that may wait for one of its connections; past it, 429 `tenant_busy`. */
        tenantQueue: z.coerce.number().int().min(0).default(64),
        /** Rows a request's statements may return in all; past it the query is cancelled, 413 `result_too_large`. */
        maxResultRows: z.coerce.number().int().min(1).default(100_000),
        /** Bytes (PostgreSQL's text) a request's statements may return in all; past it, 413 `result_too_large`. */
        maxResultBytes: z.coerce
          .number()
          .int()
          .min(1024)
          .default(16 * 1024 * 1024),
        /**
         * Bytes of answers this router has built that their clients have not read yet, all tenants
         * together (a tenant: a quarter of it); past it requests are refused before they run (503
         * `router_busy`; the tenant's: 429 `tenant_busy`).
         */
        maxUnreadBytes: z.coerce
          .number()
          .int()
          .min(1024 * 1024)
          .default(256 * 1024 * 1024),
        /** How long a write's Idempotency-Key is remembered with its first answer. */
        idempotencyTtlSeconds: z.coerce.number().int().min(60).default(86_400),
        /** The largest first answer kept for an Idempotency-Key (a retry of a larger one gets 409). */
        idempotencyMaxBytes: z.coerce
          .number()
          .int()
          .min(1024)
          .default(1024 * 1024),
        /** Statements slower than this are logged as warnings: the seed's budget is 100 ms. */
        slowStatementMs: z.coerce.number().int().min(1).default(100),
        /** A replica further behind its primary than this serves no reads. */
        maxReplicaLagBytes: z.coerce
          .number()
          .int()
          .min(0)
          .default(16 * 1024 * 1024),
        healthIntervalMs: z.coerce.number().int().min(20).default(200),
        /** How long a tenant's requests wait for a moving tenant's new route before a 503. */
        bufferWindowMs: z.coerce.number().int().min(0).default(5_000),
        routeCacheTtlMs: z.coerce.number().int().min(0).default(30_000),
        negativeCacheTtlMs: z.coerce.number().int().min(0).default(2_000),
        maxBodyBytes: z.coerce
          .number()
          .int()
          .min(1024)
          .default(1024 * 1024),
        maxParams: z.coerce.number().int().min(1).max(65_535).default(10_000),
        /**
         * SQL text of one statement, in bytes; past it, 413 `statement_too_large`. The policy parses each
         * statement on the router's event loop (~100 ms for 64 KiB of the densest SQL): a bound on that
         * is a bound on what one request can make every other wait.
         */
        maxStatementBytes: z.coerce
          .number()
          .int()
          .min(1024)
          .default(64 * 1024),
        /**
         * Statements in one request (a batch); past it, 413 `too_many_statements`. Each distinct one is
         * prepared in the shard's backend for the transaction, kilobytes of its memory apiece.
         */
        maxBatchStatements: z.coerce.number().int().min(1).max(10_000).default(1_000),
        /**
         * How often this router looks for a move whose mover stopped while the tenant was fenced (its
         * writes held) and resumes it, so clients see a pause, not 503s; 0 turns it off.
         */
        moveRescueIntervalMs: z.coerce.number().int().min(0).default(1_000),
        /**
         * Read answers cached per tenant in Redis (issue 17): reads of these tables only (seconds each; the
         * seed's TTLs), or any read whose request asks (`x-switchyard-cache: <seconds>`). An answer is keyed
         * by the versions of the tables it read, which every write through a router bumps: never older than
         * the tenant's last acknowledged write. docs/CACHE.md.
         */
        cache: z
          .strictObject({
            /**
             * With it off, routers neither cache nor bump versions: turn it on or off on every router at
             * once (docs/CACHE.md).
             */
            enabled: z.boolean().default(true),
            tables: z
              .record(z.string().min(1), z.number().int().min(1).max(MAX_CACHE_SECONDS))
              .default({ businesses: 3600, services: 1800, working_hours: 86_400 }),
            /** Tables a write to the key's table may also change (its triggers'): their cached reads go too. */
            dependencies: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
            /**
             * The longest a request may ask with `x-switchyard-cache: <seconds>` (longer asks get this):
             * the seed's reports are cached 5 minutes, and every answer kept is Redis memory.
             */
            maxAskedSeconds: z.number().int().min(1).max(MAX_CACHE_SECONDS).default(600),
            /** Answers larger than this are not cached. */
            maxEntryBytes: z.number().int().min(1).default(1_048_576),
            /**
             * A tenant's answers in Redis, in bytes, counted until the longest TTL among them passes: one
             * tenant's reads never crowd out the others' answers, rate-limit counters and LSNs.
             */
            tenantBytes: z.number().int().min(1).default(2_097_152),
            /** The process-local copy in front of Redis, in bytes. */
            localBytes: z.number().int().min(0).default(67_108_864),
          })
          .prefault({}),
        /**
         * Per-tenant statement statistics (issue 18): calls, errors, time, p99 and rows per tenant and
         * statement fingerprint, sent to Redis every `flushMs` and merged there over every router
         * (`switchyard top`, `GET /admin/v1/stats/statements`). Nothing is kept without Redis.
         */
        statementStats: z
          .strictObject({
            enabled: z.boolean().default(true),
            /**
             * Fingerprints kept per tenant, in this router between flushes and in Redis per hour; the
             * tenant's further statements count in one `other` row.
             */
            fingerprintsPerTenant: z.coerce.number().int().min(1).max(10_000).default(100),
            /** Tenants this router keeps counts of between flushes; statements of further tenants are not counted. */
            tenants: z.coerce.number().int().min(1).default(10_000),
            /**
             * Fingerprints this router keeps an hour over all tenants (each a row of counters, ~300 bytes,
             * its text only until sent): the bound on its memory when Redis is away. Past it, statements of
             * new fingerprints count in their tenant's `other` row.
             */
            maxRows: z.coerce.number().int().min(1).default(100_000),
            flushMs: z.coerce.number().int().min(10).default(1_000),
          })
          .prefault({}),
        /**
         * How often this router runs `partitions ensure` on every shard (and once at start), so monthly
         * partitioned tables always have `partitionMonthsAhead` months ahead; 0 turns it off. 12, as the
         * example's migration makes: a month gets its partition long before most of its bookings, which
         * otherwise wait in a DEFAULT partition and are moved out, with the table locked, when it is made.
         */
        partitionKeeperIntervalMs: z.coerce.number().int().min(0).default(3_600_000),
        partitionMonthsAhead: z.coerce.number().int().min(0).max(120).default(12),
        /** Replaces every tenant's api_rate_limit (API requests per hour), e.g. for load tests. */
        rateLimitOverride: z.coerce.number().int().min(1).optional(),
        /**
         * Router requests (a statement, a batch, each statement of a transaction block) one API request
         * (x-switchyard-request) may make; past it, and for requests naming none, a tenant has a budget of
         * this many per API request of its api_rate_limit an hour: the seed's 1000 make 50,000.
         */
        statementsPerApiRequest: z.coerce.number().int().min(1).max(10_000).default(50),
        /** TLS from this router to every shard node (docs/ROUTER.md, "TLS to the shards"). */
        tls: routerTlsSchema.prefault({}),
      })
      .prefault({}),
    /** The online tenant mover (`switchyard move`, `rebalance apply`). */
    mover: z
      .strictObject({
        /** How long the fence waits for the tenant's in-flight writes; new writes queue meanwhile. */
        lockTimeoutMs: z.coerce.number().int().min(1).default(500),
        /**
         * Fence tries before the move gives up for now (resumable); with `cancelBlockersAfterMs`, the
         * tries after that grace (those before it are free).
         */
        fenceAttempts: z.coerce.number().int().min(1).default(5),
        /**
         * After the fence has failed this long, the tenant's transactions open at least this long (they
         * hold its lock) are cut short before each further try (`fenceAttempts` of them): their queries
         * cancelled, or their sessions ended when idle in transaction. 0: never (the move may give up).
         */
        cancelBlockersAfterMs: z.coerce.number().int().min(0).default(3_000),
        /** Replication lag (bytes) under which the fence is tried: never cut over while lagging. */
        catchUpBytes: z.coerce
          .number()
          .int()
          .min(0)
          .default(1024 * 1024),
        /** How long copy and catch-up may take before the move stops (resumable) with an error. */
        catchUpTimeoutMs: z.coerce
          .number()
          .int()
          .min(1)
          .default(30 * 60_000),
        /** How long a fenced tenant waits for the target to apply past the fence before unfencing. */
        cutoverTimeoutMs: z.coerce.number().int().min(1).default(2_000),
        /** Wait after cutover before the source's copy is deleted; default: route cache TTL + 5 s. */
        cleanupGraceMs: z.coerce.number().int().min(0).optional(),
        /** Rows per DELETE when the source's copy (or an aborted target's) is removed. */
        deleteBatchRows: z.coerce.number().int().min(1).default(5_000),
        /**
         * Verify hashes only the rows changed since a baseline hashed before the fence when the full
         * hash takes at least this long; below it, one full hash while fenced is quicker.
         */
        verifyFromBaselineAboveMs: z.coerce.number().int().min(0).default(20),
        /** Open moves out of one source shard at a time. */
        maxPerSource: z.coerce.number().int().min(1).default(2),
      })
      .prefault({}),
    /** The seed's per-tenant limits; a tenant's own limits in the directory override them. */
    tenantLimits: z
      .strictObject({
        max_appointments_per_day: z.number().int().min(0).default(500),
        max_customers: z.number().int().min(0).default(10_000),
        max_services: z.number().int().min(0).default(100),
        max_staff: z.number().int().min(0).default(50),
        api_rate_limit: z.number().int().min(1).default(1000),
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
export type RouterTls = z.output<typeof routerTlsSchema>

/** Types `shards.config.ts`; validation happens when the config is loaded, with env overrides applied. */
export function defineTopology(topology: TopologyInput): TopologyInput {
  return topology
}
