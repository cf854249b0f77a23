import type { Finding } from './doctor.ts'
import { monthStart, type Partition, type PartitionedTable } from './partitions.ts'

/**
 * What `doctor` says of the shards' partitioned tables (issue 16): a monthly table lacking this month's
 * or next month's partition (writes dated then would fail, or land in a DEFAULT partition), a DEFAULT
 * partition holding rows of a month `partitions ensure` keeps (`monthsAhead`: it could not move them
 * out, and that month has no partition), and partitions that differ between shards (a move's preflight
 * creates the source's on the target; anything else is drift). Rows dated beyond the kept months are
 * what a DEFAULT partition is for: reported, not a problem.
 */
export function partitionFindings(
  layouts: Map<string, PartitionedTable[]>,
  monthsAhead: number,
  now = new Date(),
): Finding[] {
  const findings: Finding[] = []
  const months = [monthStart(now, 0), monthStart(now, 1)]
  const kept = { from: monthStart(now, 0), to: monthStart(now, monthsAhead + 1) }
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
        findings.push(defaultFinding(on, partition, table.monthly ? kept : null))
    }
  findings.push(...agreement(layouts))
  return findings
}

/** `kept`: the months ensure keeps, for a monthly table; a DEFAULT partition of another table holds no rows. */
function defaultFinding(
  on: string,
  partition: Partition,
  kept: { from: string; to: string } | null,
): Finding {
  const rows = partition.rows ?? 0
  const due = kept
    ? partition.rowMonths.filter((m) => m.month >= kept.from && m.month < kept.to)
    : rows
      ? [{ month: 'any month', rows }]
      : []
  const dueRows = due.reduce((sum, m) => sum + m.rows, 0)
  return {
    check: 'default partition holds no rows of kept months',
    target: on,
    ok: due.length === 0,
    detail: due.length
      ? `${partition.name} holds ${dueRows} rows of ${due.map((m) => m.month.slice(0, 7)).join(', ')}: run \`switchyard partitions ensure\` (it moves them into their month)`
      : `${partition.name} holds ${rows} rows${rows && kept ? `, all dated outside ${kept.from.slice(0, 7)}..${monthStart(new Date(`${kept.to}T00:00:00Z`), -1).slice(0, 7)}` : ''}`,
  }
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
