import { execFile } from 'node:child_process'
import { createConnection } from 'node:net'
import { SwitchyardError } from '../errors.ts'
import type { ServerUser } from './binaries.ts'

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs a command (as `user` when given) and resolves with its exit code; never throws on a non-zero exit. */
export function run(
  command: string,
  args: string[],
  options: { user?: ServerUser | undefined; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      {
        env: { ...process.env, ...options.env },
        cwd: options.cwd ?? '/',
        ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') return reject(error)
        resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr })
      },
    )
  })
}

/** Like `run`, but a non-zero exit is a `code` error with the command's own words. */
export async function runChecked(
  code: string,
  command: string,
  args: string[],
  options: Parameters<typeof run>[2] = {},
): Promise<RunResult> {
  const result = await run(command, args, options)
  if (result.code !== 0) {
    const said = (result.stderr || result.stdout).trim().split('\n').slice(-5).join(' | ')
    throw new SwitchyardError(code, `${command.split('/').pop()} ${args[0] ?? ''} failed: ${said}`)
  }
  return result
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function portTaken(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.setTimeout(1000)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('timeout', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', () => resolve(false))
  })
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
