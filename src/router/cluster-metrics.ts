import type { Worker } from 'node:cluster'
import { AggregatorRegistry, type Registry } from 'prom-client'
import { z } from 'zod'
import { SwitchyardError } from '../errors.ts'

/**
 * GET /metrics of `router --workers N`: whichever worker is asked answers the sum over all of them. Only
 * the primary can reach every worker, so the worker asks the primary, the primary collects each ready
 * worker's registry as JSON and adds them up with prom-client's `AggregatorRegistry.aggregate` (each
 * metric's `aggregator`: summed unless it says otherwise, see metrics.ts).
 *
 * Not `AggregatorRegistry#clusterMetrics()`: it asks every connected worker, a worker still starting
 * included, and fails the whole scrape after 5 s when one exits before answering — which a rolling
 * restart makes routine. Here a worker that exits meanwhile is left out of that scrape.
 */

const SCRAPE = 'switchyard:metrics-scrape'
const SCRAPED = 'switchyard:metrics-scraped'
const COLLECT = 'switchyard:metrics-collect'
const COLLECTED = 'switchyard:metrics-collected'

/** How long the primary waits for one worker's metrics before the scrape fails. */
const COLLECT_TIMEOUT_MS = 5_000
/** How long a worker waits for the primary's sum: longer than the primary's own wait. */
const SCRAPE_TIMEOUT_MS = 10_000

/** One registry's metrics as `getMetricsAsJSON()` gives them: what `aggregate` takes. */
const RegistryJson = z.array(z.looseObject({ name: z.string() }))
type RegistryJson = z.infer<typeof RegistryJson>

// What crosses the IPC channel is checked like any other input: a message of another kind is not ours.
const FromWorker = z.union([
  z.strictObject({ type: z.literal(SCRAPE), id: z.number().int() }),
  z.strictObject({ type: z.literal(COLLECTED), id: z.number().int(), metrics: RegistryJson }),
  z.strictObject({ type: z.literal(COLLECTED), id: z.number().int(), error: z.string() }),
])
const FromPrimary = z.union([
  z.strictObject({ type: z.literal(COLLECT), id: z.number().int() }),
  z.strictObject({ type: z.literal(SCRAPED), id: z.number().int(), text: z.string() }),
  z.strictObject({ type: z.literal(SCRAPED), id: z.number().int(), error: z.string() }),
])

const unavailable = (message: string) => new SwitchyardError('metrics_unavailable', message)

/** In a worker: hands this process's metrics to the primary whenever it collects them. */
export function answerMetricsRequests(registry: Registry): void {
  process.on('message', (raw: unknown) => {
    const message = FromPrimary.safeParse(raw)
    if (!message.success || message.data.type !== COLLECT) return
    const { id } = message.data
    registry.getMetricsAsJSON().then(
      (metrics) => process.send?.({ type: COLLECTED, id, metrics }),
      (error: Error) => process.send?.({ type: COLLECTED, id, error: error.message }),
    )
  })
}

/** In a worker: GET /metrics, answered with every worker's metrics added up by the primary. */
export function scrapeThroughPrimary(): () => Promise<string> {
  const waiting = new Map<number, (answer: string | Error) => void>()
  let nextId = 0
  process.on('message', (raw: unknown) => {
    const message = FromPrimary.safeParse(raw)
    if (!message.success || message.data.type !== SCRAPED) return
    const answer = message.data
    waiting.get(answer.id)?.('text' in answer ? answer.text : unavailable(answer.error))
  })
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = nextId++
      const settle = (answer: string | Error) => {
        clearTimeout(timer)
        waiting.delete(id)
        if (answer instanceof Error) reject(answer)
        else resolve(answer)
      }
      const timer = setTimeout(
        () => settle(unavailable(`the primary did not answer within ${SCRAPE_TIMEOUT_MS} ms`)),
        SCRAPE_TIMEOUT_MS,
      )
      waiting.set(id, settle)
      if (!process.send) settle(unavailable('this process has no primary to ask'))
      else process.send({ type: SCRAPE, id }, undefined, undefined, (error) => error && settle(error))
    })
}

export interface MetricsGatherer {
  /** Every message from a worker comes here; those not about metrics are left alone. */
  onMessage(worker: Worker, raw: unknown): void
  /** A worker exited: scrapes waiting for its metrics go on without them. */
  onExit(worker: Worker): void
}

/** In the primary: answers each worker's scrape with the sum over `ready()`, the workers serving now. */
export function createMetricsGatherer(ready: () => Worker[]): MetricsGatherer {
  const collecting = new Map<
    number,
    { worker: Worker; settle(metrics: RegistryJson | Error | undefined): void }
  >()
  let nextId = 0

  function collect(worker: Worker): Promise<RegistryJson | undefined> {
    return new Promise((resolve, reject) => {
      const id = nextId++
      const settle = (metrics: RegistryJson | Error | undefined) => {
        clearTimeout(timer)
        collecting.delete(id)
        if (metrics instanceof Error) reject(metrics)
        else resolve(metrics)
      }
      const timer = setTimeout(
        () =>
          settle(
            unavailable(`worker pid ${worker.process.pid} sent no metrics within ${COLLECT_TIMEOUT_MS} ms`),
          ),
        COLLECT_TIMEOUT_MS,
      )
      collecting.set(id, { worker, settle })
      // A worker that cannot be sent to any more is on its way out: left out, as if it had exited.
      worker.send({ type: COLLECT, id }, undefined, (error) => error && settle(undefined))
    })
  }

  async function gather(): Promise<string> {
    const collected = await Promise.all(ready().map(collect))
    return AggregatorRegistry.aggregate(collected.filter((metrics) => metrics !== undefined)).metrics()
  }

  return {
    onMessage(worker, raw) {
      const message = FromWorker.safeParse(raw)
      if (!message.success) return
      const { id } = message.data
      if (message.data.type === COLLECTED) {
        const answer = message.data
        collecting.get(id)?.settle('metrics' in answer ? answer.metrics : unavailable(answer.error))
        return
      }
      gather().then(
        (text) => worker.isConnected() && worker.send({ type: SCRAPED, id, text }),
        (error: Error) => worker.isConnected() && worker.send({ type: SCRAPED, id, error: error.message }),
      )
    },
    onExit(worker) {
      for (const pending of collecting.values()) if (pending.worker === worker) pending.settle(undefined)
    },
  }
}
