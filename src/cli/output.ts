import { type Command, Option } from 'commander'
import pino from 'pino'
import { loadTopology } from '../config/load.ts'
import type { Topology } from '../config/topology.ts'
import { isSwitchyardError, SwitchyardError } from '../errors.ts'

/** `--json`: the command prints its result as JSON on stdout instead of tables. */
export const json = new Option('--json', 'print JSON')

/** Every command runs through here: one place turns errors into `error [code]: message` and exit 1. */
export function action<A extends unknown[]>(run: (topology: Topology, ...args: A) => Promise<void>) {
  return async (...args: A) => {
    try {
      await run(await loadTopology(), ...args)
    } catch (error) {
      const known = isSwitchyardError(error)
        ? error
        : new SwitchyardError('internal', (error as Error).stack ?? String(error))
      process.stderr.write(`error [${known.code}]: ${known.message}\n`)
      process.exitCode = 1
    }
  }
}

/**
 * A verb that prints what `get` returns: as JSON with `--json`, else as `text` shows it (tables on
 * stdout, lines for the operator on stderr). Errors as every `action`.
 */
export function shows<A extends unknown[], T>(
  get: (topology: Topology, ...args: A) => Promise<T>,
  text: (result: T, ...args: A) => void,
) {
  return action(async (topology, ...args: A) => {
    const result = await get(topology, ...args)
    // Commander passes the command itself last, after the arguments and the options.
    const command = args[args.length - 1] as Command
    if (command.opts().json) print(result)
    else text(result, ...args)
  })
}

/** Mover logs go to stderr with the progress bar, so `--json` output on stdout stays clean. */
export const cliLogger = () =>
  pino({ level: process.env.LOG_LEVEL ?? 'warn', base: { service: 'switchyard' } }, pino.destination(2))

/** A line for the operator, on stderr: stdout is kept for tables and JSON. */
export const say = (line: string) => process.stderr.write(`${line}\n`)
export const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)

export function table(rows: Record<string, unknown>[], columns: string[]): string {
  const cells = rows.map((row) => columns.map((column) => String(row[column] ?? '')))
  const widths = columns.map((column, i) =>
    Math.max(column.length, ...cells.map((cell) => cell[i]?.length ?? 0)),
  )
  const line = (values: string[]) =>
    values
      .map((value, i) => value.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd()
  return [line(columns), ...cells.map(line)].join('\n')
}

/** A table on stdout. */
export const printTable = (rows: Record<string, unknown>[], columns: string[]) =>
  process.stdout.write(`${table(rows, columns)}\n`)

export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit += 1
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`
}
