import { spawnSync } from 'node:child_process'
import { existsSync, rmSync, statSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { SwitchyardError } from '../errors.ts'

/** Debian's package is `chromium`; other systems name the same browser differently. */
const BROWSERS = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']

function findBrowser(): string {
  const given = process.env.CHROMIUM
  if (given) return given
  const found = BROWSERS.find((name) => spawnSync('which', [name]).status === 0)
  if (!found)
    throw new SwitchyardError(
      'chromium_missing',
      'taking a screenshot needs Chromium: `apt-get install -y chromium` (Debian), or CHROMIUM=/path/to/chrome',
    )
  return found
}

/**
 * Opens the HTML report in headless Chromium and saves a PNG of it: the proof that its inline script
 * draws the chart without anything from the network. Run as root, Chromium needs --no-sandbox.
 */
export function screenshotReport(html: string, png: string): string {
  if (!existsSync(html)) throw new SwitchyardError('invalid_input', `${html}: no such report`)
  const out = path.resolve(png)
  // A picture left from an earlier run must not pass for this one.
  rmSync(out, { force: true })
  const result = spawnSync(
    findBrowser(),
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--hide-scrollbars',
      '--window-size=1100,1800',
      // Lets the page's script run to the end before the picture is taken.
      '--virtual-time-budget=5000',
      `--screenshot=${out}`,
      pathToFileURL(path.resolve(html)).href,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  )
  if (result.status !== 0 || !existsSync(out) || statSync(out).size === 0)
    throw new SwitchyardError(
      'screenshot_failed',
      `chromium exited ${result.status ?? result.signal}: ${(result.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`,
    )
  return out
}
