import { mkdirSync, mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { type Browser, chromium, type Page } from 'playwright-core'
import { describe, expect } from 'vitest'
import { withDirectory } from '../src/directory/connection.ts'
import { addTenant } from '../src/directory/tenants.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { adminAndAppKeys, connect, it, removeTenants, startTestRouter, tenantWithKey } from './fixtures.ts'
import { seededTenant } from './move-support.ts'
import { query } from './router-support.ts'
import { newTenantId, topology } from './support.ts'

/**
 * The operator console in Debian's Chromium (`apt-get install -y chromium`), driven by playwright-core.
 * Screenshots go to a temporary folder, or to CONSOLE_SCREENSHOTS (docs/console/ holds the committed ones).
 */
const shots = process.env.CONSOLE_SCREENSHOTS ?? mkdtempSync(path.join(tmpdir(), 'console-shots-'))
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const STEP_MS = 60_000

let router: RunningRouter
let browser: Browser
let page: Page
let adminKey: string
let appKey: string
const created: string[] = []
const requests: string[] = []
const directory = () => connect(topology().directory)

it.beforeAll(async () => {
  router = await startTestRouter()
  ;({ admin: adminKey, app: appKey } = await adminAndAppKeys('console test'))
  await businesses()
  mkdirSync(shots, { recursive: true })
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Root needs --no-sandbox; the machine has no network, so nothing may try to phone home.
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-gpu'],
  })
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
  page.on('dialog', (dialog) => dialog.accept())
  page.on('request', (request) => requests.push(request.url()))
})

it.afterAll(async () => {
  await browser?.close()
  await removeTenants(created)
  await directory()`update shards set state = 'active' where state <> 'active'`
})

/** The seed's kind of tenants, on every shard, with some traffic: what an operator would see. */
const BUSINESSES: [name: string, shard: string, limits: Record<string, number>][] = [
  ['Clínica Dental Norte', 'shard-1', { api_rate_limit: 5000 }],
  ['Peluquería Sol', 'shard-1', {}],
  ['Fisioterapia Centro', 'shard-1', { max_staff: 12 }],
  ['Taller Mecánico Ruiz', 'shard-2', {}],
  ['Estudio Yoga Mar', 'shard-2', { max_customers: 2000 }],
  ['Veterinaria Los Pinos', 'shard-3', {}],
  ['Academia Idiomas Sur', 'shard-3', {}],
]

/** How many statements each business sends at the start: a few, different per tenant. */
const sentBy = (name: string) => (name.length % 5) + 2

async function businesses(): Promise<void> {
  for (const [name, shard, limits] of BUSINESSES) {
    const tenant = await tenantWithKey(shard, limits)
    await directory()`update tenants set name = ${name} where id = ${tenant.id}`
    for (let i = 0; i < (name.length % 5) + 2; i++) {
      const answer = await query(router, tenant, 'select count(*) from customers where name like $1', [
        `${i}%`,
      ])
      expect(answer.status).toBe(200)
    }
  }
}

async function snap(name: string): Promise<void> {
  const file = path.join(shots, `${name}.png`)
  await page.screenshot({ path: file, fullPage: true })
  expect(statSync(file).size).toBeGreaterThan(10_000)
}

const shardRow = (id: string) => page.locator(`#shards-rows tr[data-shard="${id}"]`)

async function signIn(key: string): Promise<void> {
  await page.fill('#admin-key', key)
  await page.click('#signin-form button[type=submit]')
}

describe('the operator console in a real browser', () => {
  it('is three static files with a strict content security policy', async () => {
    for (const asset of ['/console', '/console/console.js', '/console/console.css']) {
      const response = await fetch(`${router.url}${asset}`)
      expect(response.status).toBe(200)
      expect(response.headers.get('content-security-policy')).toMatch(/script-src 'self'/)
      expect(response.headers.get('x-content-type-options')).toBe('nosniff')
      await response.arrayBuffer()
    }
  })

  it('signs in with an admin key only, and keeps it out of the address and storage that outlives the tab', async () => {
    await page.goto(`${router.url}/console`)
    await expect.poll(() => page.isVisible('#signin')).toBe(true)
    await snap('signin')
    await signIn(`sy_aaaaaaaaaaaa_${'a'.repeat(43)}`)
    await expect.poll(() => page.textContent('#signin-error')).toMatch(/refused/)
    await signIn(appKey)
    await expect.poll(() => page.textContent('#signin-error')).toMatch(/not an admin key/)
    await signIn(adminKey)
    await page.waitForSelector('#view-shards:not([hidden])')
    expect(page.url()).not.toContain(adminKey)
    expect(requests.some((url) => url.includes(adminKey))).toBe(false)
    expect(await page.evaluate<string>('JSON.stringify(localStorage) + document.cookie')).not.toContain(
      adminKey,
    )
  })

  it('shows the three shards with their fill against capacity and every node up', async () => {
    for (const shard of topology().shards) {
      const row = shardRow(shard.id)
      await row.waitFor()
      const [tenants] = await directory()<{ n: number }[]>`
        select count(*)::int as n from tenants where shard_id = ${shard.id}`
      await expect.poll(() => row.locator('.fill').textContent()).toMatch(new RegExp(`^ ${tenants?.n}/100`))
      await expect.poll(() => row.locator('[data-node] .badge').allTextContents()).toEqual(['up', 'up'])
    }
    expect(await page.locator('#shards-rows tr').count()).toBe(topology().shards.length)
    await snap('shards')
  })

  it('lists tenants by search and writes a hostile name as text', async () => {
    const hostile = newTenantId()
    const name = `<img src=x onerror="document.title='owned'">`
    await withDirectory(topology(), (d) => addTenant(d, topology(), { id: hostile, name, shard: 'shard-1' }))
    created.push(hostile)
    await page.click('#nav a[data-view=tenants]')
    await page.fill('#tenant-search', hostile)
    const row = page.locator(`#tenants-rows tr[data-tenant="${hostile}"]`)
    await row.waitFor()
    expect(await row.locator('th').textContent()).toContain(name)
    expect(await row.locator('img').count()).toBe(0)
    expect(await page.title()).not.toBe('owned')
    await page.fill('#tenant-search', '')
    // Requests this hour come from every router's statement statistics (flushed to Redis each second).
    const business = (BUSINESSES[1] as (typeof BUSINESSES)[number])[0]
    const busy = page.locator('#tenants-rows tr', { hasText: business })
    await expect
      .poll(() => busy.locator('td.num').first().textContent(), { timeout: 20_000 })
      .toBe(String(sentBy(business)))
    await snap('tenants')
  })

  it('starts a move and shows it live until done, without a reload', async () => {
    // Not removed afterwards: its move's record names it (as in the other move tests).
    const tenant = await seededTenant('shard-1')
    await page.click('#nav a[data-view=moves]')
    await page.waitForSelector('#view-moves:not([hidden])')
    // Gone if the page reloads: the move must reach `done` on this very page.
    await page.evaluate('window.stayed = true')
    await page.fill('#move-tenant', tenant)
    await page.selectOption('#move-target', 'shard-2')
    await page.click('#move-form button[type=submit]')
    await expect.poll(() => page.textContent('#notice')).toMatch(/started/)
    const [move] = await directory()<{ id: string }[]>`select id from moves where tenant_id = ${tenant}`
    const row = page.locator(`#moves-rows tr[data-move="${move?.id}"]`)
    await row.waitFor()
    const seen = new Set<string>()
    await expect
      .poll(
        async () => {
          const state = (await row.getAttribute('data-state')) ?? ''
          seen.add(state)
          return state
        },
        { timeout: STEP_MS, interval: 200 },
      )
      .toBe('done')
    console.log(`console: the move's row showed ${[...seen].join(' → ')}`)
    expect(await page.evaluate<boolean>('window.stayed === true')).toBe(true)
    expect(await row.locator('td').nth(3).textContent()).toMatch(/\d+ \/ \d+/)
    const [placed] = await directory()<
      { shard_id: string }[]
    >`select shard_id from tenants where id = ${tenant}`
    expect(placed?.shard_id).toBe('shard-2')
    await snap('moves')
  })

  it('drains a shard (storing its plan) and undrains it', async () => {
    await page.click('#nav a[data-view=shards]')
    const row = shardRow('shard-3')
    await row.getByRole('button', { name: 'Drain' }).click()
    await expect
      .poll(() => row.locator('.badge').first().textContent(), { timeout: STEP_MS })
      .toBe('draining')
    await expect.poll(() => page.textContent('#notice')).toMatch(/shard-3 is draining; plan/)
    const [shard] = await directory()<{ state: string }[]>`select state from shards where id = 'shard-3'`
    expect(shard?.state).toBe('draining')
    await snap('drain')
    await page.click('#nav a[data-view=plans]')
    const drainPlan = page.locator('#plans-rows tr').first()
    await expect.poll(() => drainPlan.locator('td').first().textContent()).toBe('drain shard-3')
    await page.waitForSelector('#plan-detail:not([hidden])')
    await snap('plans')
    await page.click('#nav a[data-view=shards]')
    await row.getByRole('button', { name: 'Undrain' }).click()
    await expect.poll(() => row.locator('.badge').first().textContent(), { timeout: STEP_MS }).toBe('active')
    const [after] = await directory()<{ state: string }[]>`select state from shards where id = 'shard-3'`
    expect(after?.state).toBe('active')
  })

  it('computes a rebalance plan, shows fill before and after, and cancels it', async () => {
    await page.click('#nav a[data-view=plans]')
    await page.click('#plan-form button[type=submit]')
    await expect
      .poll(() => page.textContent('#notice'), { timeout: STEP_MS })
      .toMatch(/Plan [0-9a-f]{8}|balanced/)
    await expect.poll(() => page.locator('#plan-fill-rows tr').count()).toBe(topology().shards.length)
    const first = page.locator('#plans-rows tr').first()
    await expect.poll(() => first.getAttribute('data-state')).toBe('planned')
    await page.click('#plan-cancel')
    await expect.poll(() => first.getAttribute('data-state'), { timeout: STEP_MS }).toBe('cancelled')
  })

  it('signs out: the key leaves the tab and the form is back', async () => {
    expect(await page.evaluate<string>('JSON.stringify(sessionStorage)')).toContain(adminKey)
    await page.click('#sign-out')
    await expect.poll(() => page.isVisible('#signin')).toBe(true)
    expect(await page.evaluate<number>('sessionStorage.length')).toBe(0)
    expect(await page.isVisible('#view-plans')).toBe(false)
  })
})
