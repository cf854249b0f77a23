import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { SwitchyardError } from '../errors.ts'
import type { CapacityOptions } from './options.ts'
import { apiRequests } from './run.ts'
import { operationPicker, type TenantContext, zipfPicker } from './workload.ts'

/** What a generator measured over a drive's measured window, and its CPU per request sent. */
export interface LightResult {
  requests: number
  errors: number
  p50: number
  p99: number
  max: number
  cpuMsPerRequest: number
}

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'light-client.ts')
/** tsx's loader by its own path: `--import tsx` would look for it from the working folder. */
const TSX = import.meta.resolve('tsx')

/**
 * The same mix at `rate` for the step's warm-up and length, driven by the light client in a process of
 * its own (src/loadtest/light-client.ts). The requests are built here first, so the client only sends.
 */
export async function driveLight(input: {
  url: string
  key: string
  rate: number
  options: Pick<CapacityOptions, 'stepDuration' | 'warmup' | 'zipf' | 'writeShare' | 'connections'>
  contexts: TenantContext[]
}): Promise<LightResult> {
  const { options } = input
  const nextTenant = zipfPicker(input.contexts, options.zipf)
  const nextOperation = operationPicker(options.writeShare)
  const apiRequestOf = apiRequests(randomUUID())
  const total = Math.round(input.rate * (options.warmup + options.stepDuration))
  const lines: string[] = []
  for (let i = 0; i < total; i++) {
    const tenant = nextTenant()
    lines.push(
      JSON.stringify({
        tenant: tenant.id,
        apiRequest: apiRequestOf.next(tenant.id),
        body: JSON.stringify(nextOperation().build(tenant)),
      }),
    )
  }
  const folder = await mkdtemp(path.join(tmpdir(), 'switchyard-light-'))
  try {
    const file = path.join(folder, 'requests.jsonl')
    await writeFile(file, `${lines.join('\n')}\n`)
    return await runClient(
      [file, input.url, String(input.rate), String(options.warmup), String(options.connections)],
      input.key,
    )
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
}

function runClient(args: string[], key: string): Promise<LightResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, CLIENT, ...args], {
      env: { ...process.env, SWITCHYARD_LOADTEST_KEY: key },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let said = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8')
    })
    child.stderr.on('data', (chunk: Buffer) => {
      said = `${said}${chunk.toString('utf8')}`.slice(-2000)
    })
    child.on('error', reject)
    // 'close', not 'exit': its output may still be in the pipe when it exits.
    child.on('close', (code) => {
      try {
        if (code !== 0) throw new Error(said.trim())
        resolve(JSON.parse(out) as LightResult)
      } catch (error) {
        reject(new SwitchyardError('loadtest_failed', `the light client failed: ${(error as Error).message}`))
      }
    })
  })
}
