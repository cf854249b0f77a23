import { PHASES } from './mover.ts'
import type { Move, Phase } from './record.ts'

const BAR = 24

/**
 * One line for a terminal: phase (n of m), a bar (rows copied while copying, phases otherwise), rows
 * copied / total, replication lag, elapsed time, and the stall once the move has cut over.
 */
export function progressLine(move: Move, startedAt: number, now = Date.now()): string {
  const p = move.progress
  const index = PHASES.indexOf(move.state as Phase)
  const phase = index >= 0 ? `${move.state} (${index + 1}/${PHASES.length})` : move.state
  const share =
    move.state === 'copy' && p.totalRows
      ? Math.min(1, (p.copiedRows ?? 0) / p.totalRows)
      : index >= 0
        ? index / (PHASES.length - 1)
        : 1
  const filled = Math.round(share * BAR)
  const parts = [`${'█'.repeat(filled)}${'░'.repeat(BAR - filled)}`, phase.padEnd(18)]
  if (p.totalRows !== undefined) parts.push(`${fmt(p.copiedRows ?? 0)}/${fmt(p.totalRows)} rows`)
  if (p.lagBytes !== undefined) parts.push(`lag ${fmt(p.lagBytes)} B`)
  parts.push(`${((now - startedAt) / 1000).toFixed(1)} s`)
  if (p.stallMs !== undefined) parts.push(`stall ${p.stallMs} ms`)
  const cut = cutShortLine(move)
  if (cut) parts.push(cut)
  return parts.join('  ')
}

const fmt = (n: number) => n.toLocaleString('en-US')

/**
 * What the fence did to the tenant's transactions that kept it out, e.g. "cut short 1 transaction that
 * blocked the fence for 3.6 s (it had run 4.8 s)"; undefined when it cut none.
 */
export function cutShortLine(move: Move): string | undefined {
  const cut = move.progress.cutShort
  if (!cut) return undefined
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`
  const one = cut.transactions === 1
  const ran = `${one ? 'it' : 'the longest'} had run ${seconds(cut.longestMs)}`
  const ended =
    cut.terminated === 0 ? '' : one ? '; its session was ended' : `; ${cut.terminated} sessions were ended`
  return `cut short ${cut.transactions} transaction${one ? '' : 's'} that blocked the fence for ${seconds(cut.fenceBlockedMs)} (${ran}${ended})`
}

/** Draws progress on stderr: redrawn in place on a terminal, one line per phase otherwise. */
export function progressPrinter(stream: NodeJS.WriteStream = process.stderr) {
  const startedAt = Date.now()
  let lastState = ''
  let lastDraw = 0
  return {
    update(move: Move) {
      const now = Date.now()
      if (stream.isTTY) {
        if (move.state === lastState && now - lastDraw < 100) return
        stream.write(`\r\x1b[2K${progressLine(move, startedAt, now)}`)
      } else if (move.state !== lastState) {
        stream.write(`${progressLine(move, startedAt, now)}\n`)
      }
      lastState = move.state
      lastDraw = now
    },
    done() {
      if (stream.isTTY && lastState) stream.write('\n')
    },
  }
}
