const BAR = 24

/** Where a long loadtest step is: which step, how many of how many, and a note (rows written, rate). */
export interface StepProgress {
  step: string
  done: number
  total: number
  note?: string
}

export function stepLine(progress: StepProgress, startedAt: number, now = Date.now()): string {
  const share = progress.total ? Math.min(1, progress.done / progress.total) : 1
  const filled = Math.round(share * BAR)
  const parts = [
    `${'█'.repeat(filled)}${'░'.repeat(BAR - filled)}`,
    progress.step.padEnd(10),
    `${progress.done}/${progress.total}`,
  ]
  if (progress.note) parts.push(progress.note)
  parts.push(`${((now - startedAt) / 1000).toFixed(1)} s`)
  return parts.join('  ')
}

/**
 * Draws progress on stderr like the mover's bar: redrawn in place on a terminal; otherwise one line
 * when a step starts and at every tenth of it, so a CI log shows it is moving without a line per tenant.
 */
export function stepPrinter(stream: NodeJS.WriteStream = process.stderr) {
  const startedAt = Date.now()
  let lastStep = ''
  let lastTenth = -1
  let lastDraw = 0
  return {
    update(progress: StepProgress) {
      const now = Date.now()
      const tenth = progress.total ? Math.floor((10 * progress.done) / progress.total) : 10
      if (stream.isTTY) {
        const finished = progress.done === progress.total
        if (progress.step === lastStep && now - lastDraw < 100 && !finished) return
        // A finished step keeps its line; the next one draws below it.
        if (lastStep && progress.step !== lastStep) stream.write('\n')
        stream.write(`\r\x1b[2K${stepLine(progress, startedAt, now)}`)
      } else if (progress.step !== lastStep || tenth !== lastTenth) {
        stream.write(`${stepLine(progress, startedAt, now)}\n`)
      }
      lastStep = progress.step
      lastTenth = tenth
      lastDraw = now
    },
    /** A line of its own between progress lines (a step's outcome): kept, the bar redrawn below it. */
    say(line: string) {
      stream.write(stream.isTTY && lastStep ? `\r\x1b[2K${line}\n` : `${line}\n`)
      lastStep = ''
      lastTenth = -1
    },
    done() {
      if (stream.isTTY && lastStep) stream.write('\n')
    },
  }
}
