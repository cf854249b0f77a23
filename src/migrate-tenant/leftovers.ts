import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { openMove } from '../directory/move-states.ts'
import { stillHeld } from '../directory/session-lock.ts'
import { answers, withAdmin } from '../shard/connection.ts'
import type { Finding } from '../shard/doctor.ts'
import { primaryName } from '../shard/nodes.ts'
import { moveIdOf } from './artifacts.ts'
import { runLock } from './record.ts'

interface Artifact {
  kind: 'publication' | 'subscription' | 'slot'
  name: string
  /** For slots: whether a WAL sender holds it (an unheld slot still keeps WAL). */
  active: boolean
  /** For slots: the WAL it keeps from being recycled, as text (pg_size_pretty). */
  retained: string | null
}

interface OpenMove {
  state: string
  /** Whether any process holds the move's run lock, i.e. runs it now. */
  running: boolean
}

/**
 * `switchyard doctor`'s look for what moves leave behind: publications, subscriptions and replication
 * slots named after a move (and table-sync slots), on every primary. One that belongs to a move still
 * open is fine; any other is a leftover, and a slot left behind keeps the source's WAL forever.
 */
export async function moveLeftovers(topology: Topology): Promise<Finding[]> {
  const open = await withDirectory(topology, async ({ sql }) => {
    const rows = await sql<({ id: string } & OpenMove)[]>`
      select m.id, m.state, ${stillHeld(sql, runLock(sql`m.id::text`))} as running
      from moves m where ${sql.unsafe(openMove('m.state'))}`
    return new Map(rows.map(({ id, ...move }) => [id, move]))
  }).catch(() => undefined)
  const findings: Finding[] = []
  for (const shard of topology.shards) {
    const target = primaryName(shard.id)
    if (!(await answers(shard.primary))) continue
    const artifacts = await withAdmin(
      shard.primary,
      (sql) => sql<Artifact[]>`
        select 'publication' as kind, pubname::text as name, false as active, null as retained
          from pg_publication where pubname like 'sy\\_move\\_%'
        union all
        select 'subscription', subname::text, false, null from pg_subscription
          where subname like 'sy\\_move\\_%' and subdbid = (select oid from pg_database where datname = current_database())
        union all
        select 'slot', slot_name::text, active,
               pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn))
          from pg_replication_slots
          where slot_name like 'sy\\_move\\_%' or slot_name ~ '^pg_[0-9]+_sync_'
        order by 1, 2`,
    )
    let leftovers = 0
    for (const artifact of artifacts) {
      const move = moveIdOf(artifact.name)
      const openMove = move ? open?.get(move) : undefined
      if (openMove && move && artifact.kind === 'slot' && !artifact.active && !openMove.running) {
        // An open move that nothing runs (its mover stopped on an error or died) and whose slot no
        // subscription reads: the source keeps WAL for it until the move is resumed or aborted.
        leftovers += 1
        findings.push({
          check: 'move leftovers',
          target,
          ok: false,
          detail: `slot ${artifact.name} (inactive, holding ${artifact.retained ?? 'some'} of WAL) belongs to move ${move} (${openMove.state}), which no process runs: \`switchyard move resume ${move}\` or \`switchyard move abort ${move}\``,
        })
        continue
      }
      if (openMove) continue
      // A table-sync slot names no move; an active one is a copy in progress, an inactive one is left.
      if (!move && artifact.active) continue
      leftovers += 1
      findings.push({
        check: 'move leftovers',
        target,
        ok: false,
        detail: `${artifact.kind} ${artifact.name}${artifact.kind === 'slot' ? (artifact.active ? ' (active)' : ` (inactive, holding ${artifact.retained ?? 'some'} of WAL)`) : ''} belongs to ${move ? `move ${move}, which is not open` : 'no move'}: \`switchyard move abort\` or resume it, or drop it`,
      })
    }
    const inUse = artifacts.length - leftovers
    if (leftovers === 0)
      findings.push({
        check: 'move leftovers',
        target,
        ok: true,
        detail: inUse ? `none (${inUse} artifact(s) of open moves)` : 'none',
      })
  }
  return findings
}
