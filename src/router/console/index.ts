import { readFileSync } from 'node:fs'
import { Hono } from 'hono'

/**
 * The operator console (docs/CONSOLE.md): three static files, read once at start. The page holds no
 * data and no key; its script signs in with an admin key kept in the tab's sessionStorage and talks to
 * `/admin/v1` with it in the Authorization header, so the key is never in a URL or a log line.
 */
const PAGE = [
  { path: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { path: '/console.js', file: 'console.js', type: 'text/javascript; charset=utf-8' },
  { path: '/console.css', file: 'console.css', type: 'text/css; charset=utf-8' },
] as const

/**
 * Only the page's own script, style and API: nothing inline, nothing from elsewhere, no framing. The
 * script writes every value with textContent, and this keeps an injected string from running anyway.
 */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
} as const

export function createConsole(): Hono {
  const app = new Hono()
  for (const asset of PAGE) {
    const body = readFileSync(new URL(`./page/${asset.file}`, import.meta.url))
    app.get(asset.path, (c) => c.body(body, 200, { 'content-type': asset.type, ...SECURITY_HEADERS }))
  }
  return app
}
