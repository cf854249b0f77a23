import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import path from 'node:path'
import { inject } from 'vitest'
import type { Shard, Topology } from '../src/config/topology.ts'

export const topology = (): Topology => inject('topology')

export function shard(id: string): Shard {
  const found = topology().shards.find((s) => s.id === id)
  if (!found) throw new Error(`no ${id} in the test topology`)
  return found
}

/** A fresh tenant id per test: test files share one topology. */
export const newTenantId = () => randomUUID()

/** The same node as `url`, logged in as the router's role. */
export function asRouter(url: string): string {
  const parsed = new URL(url)
  parsed.username = topology().router.role.name
  parsed.password = topology().router.role.password
  return parsed.toString()
}

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs the real CLI (`bin/switchyard.js`) against the test topology. */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.resolve('bin/switchyard.js'), ...args],
      { env: { ...process.env, SWITCHYARD_CONFIG: inject('configFile'), ...env }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    )
  })
}

/** Polls until `check` returns a value, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
