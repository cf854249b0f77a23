import type { Finding } from './doctor.ts'
import { monthStart, type PartitionedTable } from './partitions.ts'

/**
 * What `doctor` says of the shards' partitioned tables (issue 16): a monthly table lacking this month's
 * or next month's partition (writes dated then would fail, or land in a DEFAULT partition), a DEFAULT
 * partition holding rows (they block creating the months they fall in), and partitions that differ
 * between shards (a move's preflight creates the source's on the target; anything else is drift).
 */
export function partitionFindings(layouts: Map<string, PartitionedTable[]>, now = new Date()): Finding[] {
  const findings: Finding[] = []
  const months = [monthStart(now, 0), monthStart(now, 1)]
  for (const [shard, tables] of layouts)
    for (const table of tables) {
      const on = `${shard} ${table.name}`
      if (table.monthly) {
        const missing = months.filter((month) => !table.partitions.some((p) => p.month === month))
        findings.push({
          check: 'partitions kept ahead',
          target: on,
          ok: missing.length === 0,
          detail: missing.length
            ? `no partition for ${missing.join(', ')}: run \`switchyard partitions ensure\``
            : `partitions through ${months[1]?.slice(0, 7)}`,
        })
      }
      for (const partition of table.partitions.filter((p) => p.rows !== null))
        findings.push({
          check: 'default partition empty',
          target: on,
          ok: partition.rows === 0,
          detail: partition.rows
            ? `${partition.name} holds ${partition.rows} rows: months they fall in cannot get their partition until they move out`
            : `${partition.name} is empty`,
        })
    }
  findings.push(...agreement(layouts))
  return findings
}

/** Per partitioned table: the bounds every shard has, and what each lacks of the others'. */
function agreement(layouts: Map<string, PartitionedTable[]>): Finding[] {
  const names = new Set([...layouts.values()].flatMap((tables) => tables.map((table) => table.name)))
  const findings: Finding[] = []
  for (const name of names) {
    const bounds = new Map(
      [...layouts].map(([shard, tables]) => [
        shard,
        new Set(tables.find((table) => table.name === name)?.partitions.map((p) => p.bound) ?? []),
      ]),
    )
    const all = new Set([...bounds.values()].flatMap((set) => [...set]))
    const lacking = [...bounds]
      .map(([shard, set]) => ({ shard, missing: [...all].filter((bound) => !set.has(bound)) }))
      .filter(({ missing }) => missing.length > 0)
    findings.push({
      check: 'partitions agree across shards',
      target: name,
      ok: lacking.length === 0,
      detail: lacking.length
        ? lacking.map(({ shard, missing }) => `${shard} lacks ${missing.join('; ')}`).join(' | ')
        : `${all.size} partitions on every shard`,
    })
  }
  return findings
}
