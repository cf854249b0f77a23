import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { answers, withAdmin } from '../shard/connection.ts'
import type { Finding } from '../shard/doctor.ts'
import { primaryName } from '../shard/nodes.ts'
import { moveIdOf } from './artifacts.ts'

interface Artifact {
  kind: 'publication' | 'subscription' | 'slot'
  name: string
  /** For slots: whether a WAL sender holds it (an unheld slot still keeps WAL). */
  active: boolean
}

/**
 * `switchyard doctor`'s look for what moves leave behind: publications, subscriptions and replication
 * slots named after a move (and table-sync slots), on every primary. One that belongs to a move still
 * open is fine; any other is a leftover, and a slot left behind keeps the source's WAL forever.
 */
export async function moveLeftovers(topology: Topology): Promise<Finding[]> {
  const open = await withDirectory(topology, async (directory) => {
    const rows = await directory.sql<{ id: string; state: string }[]>`
      select id, state from moves where state not in ('done', 'aborted', 'failed')`
    return new Map(rows.map((r) => [r.id, r.state]))
  }).catch(() => undefined)
  const findings: Finding[] = []
  for (const shard of topology.shards) {
    const target = primaryName(shard.id)
    if (!(await answers(shard.primary))) continue
    const artifacts = await withAdmin(
      shard.primary,
      (sql) => sql<Artifact[]>`
        select 'publication' as kind, pubname::text as name, false as active from pg_publication
          where pubname like 'sy\\_move\\_%'
        union all
        select 'subscription', subname::text, false from pg_subscription
          where subname like 'sy\\_move\\_%' and subdbid = (select oid from pg_database where datname = current_database())
        union all
        select 'slot', slot_name::text, active from pg_replication_slots
          where slot_name like 'sy\\_move\\_%' or slot_name ~ '^pg_[0-9]+_sync_'
        order by 1, 2`,
    )
    let leftovers = 0
    for (const artifact of artifacts) {
      const move = moveIdOf(artifact.name)
      const state = move ? open?.get(move) : undefined
      if (state) continue
      // A table-sync slot names no move; an active one is a copy in progress, an inactive one is left.
      if (!move && artifact.active) continue
      leftovers += 1
      findings.push({
        check: 'move leftovers',
        target,
        ok: false,
        detail: `${artifact.kind} ${artifact.name}${artifact.kind === 'slot' ? (artifact.active ? ' (active)' : ' (inactive, holding WAL)') : ''} belongs to ${move ? `move ${move}, which is not open` : 'no move'}: \`switchyard move abort\` or resume it, or drop it`,
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
