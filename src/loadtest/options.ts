import { z } from 'zod'
import { SwitchyardError } from '../errors.ts'

/**
 * The flags of `switchyard loadtest seed|run|local`, as zod schemas: commander hands over strings, these
 * coerce and check them, and `parseFlags` turns the first problem into `invalid_input` naming the flag.
 */

/** Loadtest tenants are named `<prefix>-<n>`, which is how `run` finds the ones `seed` made. */
const prefix = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,39}$/, 'must be lowercase letters, digits and dashes, starting with a letter')

const count = (min: number, max: number) =>
  z.coerce
    .number({ message: 'must be a number' })
    .int('must be a whole number')
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`)

const share = z.coerce
  .number({ message: 'must be a number' })
  .min(0, 'must be between 0 and 1')
  .max(1, 'must be between 0 and 1')

/** Requests per second: `nominal` (every tenant at its hourly API limit) or a number. */
function requestRate() {
  return z
    .union([
      z.literal('nominal'),
      z.coerce
        .number({ message: 'must be a number of requests per second or "nominal"' })
        .min(0.1, 'must be at least 0.1')
        .max(100_000, 'must be at most 100000'),
    ])
    .default('nominal')
}

export const seedFlags = z.strictObject({
  tenants: count(1, 10_000).default(300),
  /** Multiplies the per-tenant customers and appointments (the seed's proportions at 1). */
  scale: z.coerce
    .number({ message: 'must be a number' })
    .min(0.01, 'must be at least 0.01')
    .max(20, 'must be at most 20 (the seed allows 10,000 customers a tenant)')
    .default(1),
  prefix: prefix.default('loadtest'),
})
export type SeedOptions = z.output<typeof seedFlags>

export const runFlags = z.strictObject({
  /** A router to drive; without it the run starts its own in this process. */
  url: z
    .url({ message: 'must be an http:// URL' })
    .refine((url) => /^https?:\/\//.test(url), 'must be an http:// URL')
    .optional(),
  duration: count(1, 3600).default(60),
  warmup: count(0, 600).default(5),
  /**
   * Requests per second, scheduled at fixed intervals whatever the answers do (open loop); `nominal`:
   * every tenant at its hourly API limit (the seed's 1000 req/h), the load the p99 target is set for.
   */
  rate: requestRate(),
  connections: count(1, 1024).default(32),
  writeShare: share.default(0.2),
  /** Zipf exponent over the tenants (0: every tenant alike; 1: the first tenant gets ~1/H(n) of the load). */
  zipf: z.coerce
    .number({ message: 'must be a number' })
    .min(0, 'must be between 0 and 4')
    .max(4, 'must be between 0 and 4')
    .default(1),
  moves: count(0, 20).default(0),
  /** Drive only the first N loadtest tenants (default: every one `seed` made). */
  tenants: count(1, 10_000).optional(),
  prefix: prefix.default('loadtest'),
  json: z.string().min(1).default('tmp/loadtest-report.json'),
  html: z.string().min(1).default('tmp/loadtest-report.html'),
})
export type RunOptions = z.output<typeof runFlags>
/** A run's options once `nominal` is worked out from the tenants and their limits. */
export type ResolvedRun = RunOptions & { rate: number }

/**
 * `loadtest capacity`: open-loop steps of `stepDuration` s (after `warmup`), each with `moves` moves; the
 * rate doubles from `from` while steps pass, then the first failure and the last pass are bisected.
 */
export const capacityFlags = runFlags
  .omit({ duration: true, rate: true, moves: true, json: true, html: true, zipf: true })
  .extend({
    /** The first step's rate. */
    from: requestRate(),
    maxRate: z.coerce
      .number({ message: 'must be a number' })
      .min(1, 'must be at least 1')
      .max(100_000, 'must be at most 100000')
      .default(2000),
    /** Stop bisecting when the failing rate is within this share above the passing one. */
    precision: z.coerce
      .number({ message: 'must be a number' })
      .min(0.01, 'must be between 0.01 and 1')
      .max(1, 'must be between 0.01 and 1')
      .default(0.1),
    maxSteps: count(1, 30).default(10),
    stepDuration: count(5, 600).default(20),
    moves: count(0, 20).default(2),
    /**
     * Uniform by default: at the rates a capacity search reaches, a Zipf 1 skew sends the busiest tenant
     * ~16% of all requests, far past the seed's api_rate_limit, and the search would find the limiter's
     * 429s, not the machine's knee.
     */
    zipf: runFlags.shape.zipf.unwrap().default(0),
    /** Skip the check of the load generator at the knee (its own drive and the light client). */
    skipGeneratorCheck: z.boolean().default(false),
    /** Take a rate's first failure as final: by default it is run once more, and that run decides. */
    skipRetry: z.boolean().default(false),
    json: z.string().min(1).default('tmp/loadtest-capacity.json'),
    html: z.string().min(1).default('tmp/loadtest-capacity.html'),
  })
export type CapacityOptions = Omit<z.output<typeof capacityFlags>, 'skipGeneratorCheck' | 'skipRetry'> & {
  generatorCheck: boolean
  retry: boolean
}

/** The flags of `loadtest capacity` (or of `local --capacity`, with its schema) as the search reads them. */
export function capacityOptions<S extends typeof capacityFlags | typeof localCapacityFlags>(
  flags: Record<string, unknown>,
  schema: S,
): Omit<z.output<S>, 'skipGeneratorCheck' | 'skipRetry'> & { generatorCheck: boolean; retry: boolean } {
  const { skipGeneratorCheck, skipRetry, ...options } = parseFlags(schema, flags) as z.output<S>
  return { ...options, generatorCheck: !skipGeneratorCheck, retry: !skipRetry }
}

/** `loadtest local --capacity` (`npm run loadtest -- --capacity`): the search on the local topology. */
export const localCapacityFlags = capacityFlags.omit({ url: true }).extend({
  tenants: count(1, 10_000).default(270),
  scale: seedFlags.shape.scale,
})

/** `loadtest local` (what `npm run loadtest` runs): both, with room left on every shard for the moves. */
export const localFlags = runFlags.omit({ url: true }).extend({
  tenants: count(1, 10_000).default(270),
  scale: seedFlags.shape.scale,
  moves: count(0, 20).default(2),
})
export type LocalOptions = z.output<typeof localFlags>

/** `--write-share`: the flag a zod path like `writeShare` came from. */
const flagName = (key: PropertyKey) => `--${String(key).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`

/** Checks commander's option values against `schema`; the first problem is an `invalid_input` naming its flag. */
export function parseFlags<S extends z.ZodType>(schema: S, values: Record<string, unknown>): z.output<S> {
  const defined = Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined))
  const parsed = schema.safeParse(defined)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]
  const key = issue?.path[0]
  if (issue?.code === 'unrecognized_keys')
    throw new SwitchyardError('invalid_input', `unknown option ${issue.keys.map(flagName).join(', ')}`)
  const given = key === undefined ? '' : ` ${JSON.stringify(defined[key as string])}`
  throw new SwitchyardError(
    'invalid_input',
    `${key === undefined ? 'options' : flagName(key)}${given}: ${issue?.message ?? 'is invalid'}`,
  )
}
