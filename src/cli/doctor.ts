import type { Command } from 'commander'
import type { Topology } from '../config/topology.ts'
import { readRouterCapability } from '../directory/capability.ts'
import { withDirectory } from '../directory/connection.ts'
import { moveLeftovers } from '../migrate-tenant/leftovers.ts'
import { diagnose } from '../shard/doctor.ts'
import { json, printTable, say, shows } from './output.ts'

export function register(program: Command): void {
  program
    .command('doctor')
    .description(
      'check the topology is fit: wal_level, slots, replicas, RLS, primary keys, router role, versions, move leftovers',
    )
    .addOption(json)
    .action(
      shows(checkTopology, ({ findings }) => {
        const rows = findings.map((finding) => ({ ...finding, ok: finding.ok ? 'ok' : 'PROBLEM' }))
        printTable(rows, ['ok', 'check', 'target', 'detail'])
        const problems = findings.filter((finding) => !finding.ok).length
        say(problems ? `${problems} problem(s) found` : 'no problems found')
      }),
    )
}

/** Every finding; any problem makes the exit code 1, with or without `--json`. */
async function checkTopology(topology: Topology) {
  // The directory's capability, to compare with each shard's hash; the directory's own reachability is a finding.
  const capability = await withDirectory(topology, readRouterCapability).catch(() => undefined)
  const findings = [...(await diagnose(topology, capability)), ...(await moveLeftovers(topology))]
  const ok = findings.every((finding) => finding.ok)
  if (!ok) process.exitCode = 1
  return { ok, findings }
}
