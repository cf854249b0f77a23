// The Switchyard operator console: plain DOM, no framework, no build step. Everything it shows and does
// goes through the admin API (/admin/v1) with the admin key in the Authorization header. Every value is
// written with textContent: tenant names and error messages are never parsed as HTML.

const API = '/admin/v1'
/** sessionStorage: the key lives as long as this tab, and is never in the address or a cookie. */
const KEY_SLOT = 'switchyard.console.key'
const POLL_MS = 2000
const VIEWS = ['shards', 'tenants', 'moves', 'plans']
/** Moves in these states are finished: no abort or resume. */
const FINISHED = ['done', 'aborted', 'failed']
const TENANT_ROWS_SHOWN = 200

const $ = (id) => document.getElementById(id)

const state = {
  key: sessionStorage.getItem(KEY_SLOT),
  view: 'shards',
  shards: [],
  nodes: [],
  tenants: [],
  tenantStats: new Map(),
  moves: [],
  plans: [],
  planId: null,
  plan: null,
  timer: null,
  /** What each table last showed: rows are only rebuilt when their data changed (keeps focus). */
  drawn: new Map(),
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${state.key}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(API + path, {
    method,
    headers,
    cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await response.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (!response.ok) {
    const error = json?.error ?? {}
    throw new ApiError(
      response.status,
      error.code ?? 'http_error',
      error.message ?? `HTTP ${response.status}`,
    )
  }
  return json
}

// ---- small DOM helpers ------------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes, never HTML. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value)
    else if (name === 'className') element.className = value
    else element.setAttribute(name, value === true ? '' : String(value))
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    element.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return element
}

const cell = (content, attributes = {}) => h('td', attributes, content)
const numberCell = (content) => h('td', { className: 'num' }, content)

/** Replaces a tbody's rows, unless the data it shows is the same as last time. */
function draw(tbodyId, data, rows, empty) {
  const signature = JSON.stringify(data)
  if (state.drawn.get(tbodyId) === signature) return
  state.drawn.set(tbodyId, signature)
  const tbody = $(tbodyId)
  const built = rows()
  const columns = tbody.closest('table').querySelectorAll('thead th').length
  tbody.replaceChildren(
    ...(built.length ? built : [h('tr', {}, h('td', { colspan: columns, className: 'muted' }, empty))]),
  )
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return '?'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit += 1
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}

const formatCount = (n) => (n === null || n === undefined ? '?' : Number(n).toLocaleString('en'))
const formatMs = (ms) =>
  ms === null || ms === undefined ? '—' : `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`
const shortId = (id) => id.slice(0, 8)

function ago(iso) {
  if (!iso) return '—'
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000))
  if (seconds < 60) return `${seconds} s ago`
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`
  return new Date(iso).toLocaleDateString('en')
}

/** A fill bar: the number for everyone, a meter for the eye (and for screen readers, its value). */
function fill(tenants, capacity) {
  const share = capacity > 0 ? tenants / capacity : 0
  return h(
    'span',
    { className: 'fill' },
    h('meter', {
      min: 0,
      max: capacity,
      value: tenants,
      low: capacity * 0.7,
      high: capacity * 0.9,
      optimum: 0,
    }),
    ` ${tenants}/${capacity}`,
    h('span', { className: 'muted' }, ` (${Math.round(share * 100)}%)`),
  )
}

function badge(text, tone) {
  return h('span', { className: `badge ${tone}` }, text)
}

function say(message, tone = 'ok') {
  const notice = $('notice')
  notice.textContent = message
  notice.className = `notice ${tone}`
}

/** Runs an operator's action: its button is disabled meanwhile, its outcome is said, the view refreshed. */
async function act(button, work, done) {
  if (button) button.disabled = true
  try {
    const result = await work()
    if (done) say(done(result))
  } catch (error) {
    if (!signedOutBy(error)) say(`${error.message}${error.code ? ` (${error.code})` : ''}`, 'bad')
  } finally {
    if (button) button.disabled = false
    await refresh()
  }
}

// ---- views ------------------------------------------------------------------------------------------

function drawShards() {
  const nodesOf = (shard) => state.nodes.filter((node) => node.shard === shard)
  draw(
    'shards-rows',
    [state.shards, state.nodes],
    () =>
      state.shards.map((shard) =>
        h(
          'tr',
          { 'data-shard': shard.id },
          h('th', { scope: 'row' }, shard.id),
          cell(badge(shard.state, shard.state === 'active' ? 'ok' : 'warn')),
          cell(fill(shard.tenants, shard.capacity)),
          numberCell(formatCount(shard.rows)),
          numberCell(formatBytes(shard.bytes)),
          cell(h('ul', { className: 'nodes' }, nodesOf(shard.id).map(nodeItem)), {
            title: shard.error ?? undefined,
          }),
          cell(
            shard.state === 'draining'
              ? h(
                  'button',
                  { type: 'button', onclick: (event) => undrain(event.currentTarget, shard.id) },
                  'Undrain',
                )
              : h(
                  'button',
                  {
                    type: 'button',
                    className: 'danger',
                    onclick: (event) => drain(event.currentTarget, shard.id),
                  },
                  'Drain',
                ),
          ),
        ),
      ),
    'No shards registered.',
  )
}

function nodeItem(node) {
  const lag =
    node.role === 'replica' ? ` · lag ${node.lagBytes === null ? '?' : formatBytes(node.lagBytes)}` : ''
  const pool = node.pool ? ` · pool ${node.pool.inUse}/${node.pool.open}` : ''
  return h(
    'li',
    { 'data-node': node.name },
    badge(node.healthy ? 'up' : 'down', node.healthy ? 'ok' : 'bad'),
    ` ${node.name}`,
    h('span', { className: 'muted' }, `${lag}${pool}`),
  )
}

function drain(button, shard) {
  if (
    !window.confirm(
      `Drain ${shard}? No tenant will be placed on it, and a plan to move its tenants away is stored.`,
    )
  )
    return
  act(
    button,
    () => api('POST', `/shards/${encodeURIComponent(shard)}/drain`),
    (plan) =>
      `${shard} is draining; plan ${shortId(plan.id)} moves ${plan.moves.length} tenant(s) away (see Plans).`,
  )
}

function undrain(button, shard) {
  act(
    button,
    () => api('POST', `/shards/${encodeURIComponent(shard)}/undrain`),
    (result) =>
      `${shard} is active again${result.cancelledPlans.length ? `; ${result.cancelledPlans.length} drain plan(s) cancelled` : ''}.`,
  )
}

function limitsText(limits) {
  const entries = Object.entries(limits ?? {})
  return entries.length
    ? entries.map(([name, value]) => `${name.replaceAll('_', ' ')} ${value}`).join(', ')
    : 'defaults'
}

function drawTenants() {
  const query = $('tenant-search').value.trim().toLowerCase()
  const matches = state.tenants.filter(
    (t) =>
      !query || t.name.toLowerCase().includes(query) || t.id.includes(query) || t.shardId.includes(query),
  )
  const shown = matches.slice(0, TENANT_ROWS_SHOWN)
  $('tenant-count').textContent =
    matches.length > shown.length
      ? `showing ${shown.length} of ${matches.length} matches`
      : `${matches.length} of ${state.tenants.length}`
  const stats = shown.map((t) => state.tenantStats.get(t.id) ?? null)
  draw(
    'tenants-rows',
    [shown, stats],
    () =>
      shown.map((t, i) =>
        h(
          'tr',
          { 'data-tenant': t.id },
          h('th', { scope: 'row' }, t.name, h('br'), h('code', { className: 'muted' }, t.id)),
          cell(t.shardId),
          cell(badge(t.state, t.state === 'active' ? 'ok' : 'warn')),
          cell(limitsText(t.limits)),
          numberCell(formatCount(stats[i]?.calls ?? 0)),
          numberCell(formatMs(stats[i]?.p99Ms)),
        ),
      ),
    query ? 'No tenant matches.' : 'No tenants yet.',
  )
}

function progressText(move) {
  const { copiedRows, totalRows } = move.progress ?? {}
  if (totalRows === undefined || totalRows === null)
    return copiedRows === undefined ? '—' : formatCount(copiedRows)
  return `${formatCount(copiedRows ?? 0)} / ${formatCount(totalRows)}`
}

function drawMoves() {
  const shardIds = state.shards.map((s) => s.id)
  const target = $('move-target')
  if ([...target.options].map((o) => o.value).join() !== shardIds.join()) {
    const chosen = target.value
    target.replaceChildren(...shardIds.map((id) => h('option', { value: id, selected: id === chosen }, id)))
  }
  draw(
    'moves-rows',
    state.moves,
    () =>
      state.moves.map((move) => {
        const open = !FINISHED.includes(move.state)
        const tone = move.state === 'done' ? 'ok' : open ? 'warn' : 'bad'
        return h(
          'tr',
          { 'data-move': move.id, 'data-state': move.state },
          h('th', { scope: 'row' }, h('code', { title: move.id }, shortId(move.id))),
          cell(tenantName(move.tenantId)),
          cell(`${move.sourceShard} → ${move.targetShard}`),
          cell(badge(move.state, tone), move.error ? { title: move.error } : {}),
          numberCell(progressText(move)),
          numberCell(move.progress?.lagBytes === undefined ? '—' : formatBytes(move.progress.lagBytes)),
          numberCell(formatMs(move.progress?.stallMs)),
          cell(ago(move.createdAt)),
          cell(
            open
              ? [
                  h(
                    'button',
                    { type: 'button', onclick: (e) => resumeMove(e.currentTarget, move) },
                    'Resume',
                  ),
                  ' ',
                  h(
                    'button',
                    { type: 'button', className: 'danger', onclick: (e) => abortMove(e.currentTarget, move) },
                    'Abort',
                  ),
                ]
              : move.error
                ? h('span', { className: 'muted' }, move.error)
                : '',
          ),
        )
      }),
    'No moves yet.',
  )
}

function tenantName(id) {
  const tenant = state.tenants.find((t) => t.id === id)
  return tenant ? [tenant.name, h('br'), h('code', { className: 'muted' }, shortId(id))] : h('code', {}, id)
}

function resumeMove(button, move) {
  act(
    button,
    () => api('POST', `/moves/${move.id}/resume`),
    () => `Move ${shortId(move.id)} resumed.`,
  )
}

function abortMove(button, move) {
  if (!window.confirm(`Abort move ${shortId(move.id)}? The tenant stays on ${move.sourceShard}.`)) return
  act(
    button,
    async () => {
      try {
        return await api('POST', `/moves/${move.id}/abort`)
      } catch (error) {
        if (error.code !== 'move_past_cutover') throw error
        if (!window.confirm(`${error.message}\n\nMove the tenant back to ${move.sourceShard} instead?`))
          return null
        return api('POST', `/moves/${move.id}/abort`, { moveBack: true })
      }
    },
    (result) => (result ? `Move ${shortId(move.id)}: ${result.state}.` : 'Nothing was changed.'),
  )
}

function drawPlans() {
  draw(
    'plans-rows',
    [state.plans, state.planId],
    () =>
      state.plans.map((plan) =>
        h(
          'tr',
          {
            'data-plan': plan.id,
            'data-state': plan.state,
            className: plan.id === state.planId ? 'chosen' : undefined,
          },
          h(
            'th',
            { scope: 'row' },
            h(
              'button',
              { type: 'button', className: 'link', onclick: () => choosePlan(plan.id) },
              shortId(plan.id),
            ),
          ),
          cell(plan.shard ? `drain ${plan.shard}` : `rebalance by ${plan.strategy}`),
          cell(
            badge(
              plan.state,
              ['done', 'applying'].includes(plan.state) ? 'ok' : plan.state === 'planned' ? 'warn' : 'muted',
            ),
          ),
          numberCell(plan.moveCount),
          cell(ago(plan.createdAt)),
        ),
      ),
    'No plans yet.',
  )
  drawPlanDetail()
}

function drawPlanDetail() {
  const plan = state.plan
  $('plan-detail').hidden = !plan
  if (!plan) return
  $('plan-detail-title').textContent = `Plan ${shortId(plan.id)} — ${plan.state}`
  const kind = plan.shard ? `Drains ${plan.shard}` : `Rebalances by ${plan.strategy}`
  const moves = plan.moves.length ? `${plan.moves.length} move(s)` : 'nothing to move'
  const unbalanced = plan.balanced ? '' : `; not balanced: ${plan.reason ?? 'see the fill below'}`
  $('plan-detail-summary').textContent =
    `${kind}: ${moves}${unbalanced}${plan.error ? ` — ${plan.error}` : ''}.`
  const after = new Map(plan.after.map((f) => [f.id ?? f.shard, f]))
  draw(
    'plan-fill-rows',
    [plan.before, plan.after],
    () =>
      plan.before.map((before) => {
        const id = before.id ?? before.shard
        const next = after.get(id) ?? before
        return h(
          'tr',
          {},
          h('th', { scope: 'row' }, id),
          cell(fill(before.tenants, before.capacity)),
          cell(fill(next.tenants, next.capacity)),
        )
      }),
    'No shards.',
  )
  draw(
    'plan-move-rows',
    plan.moves,
    () =>
      plan.moves.map((m) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, m.position),
          cell(tenantName(m.tenant)),
          cell(`${m.from} → ${m.to}`),
          numberCell(formatBytes(m.bytes)),
          cell(
            badge(m.state, m.state === 'done' ? 'ok' : m.state === 'failed' ? 'bad' : 'muted'),
            m.error ? { title: m.error } : {},
          ),
        ),
      ),
    'Nothing to move.',
  )
  $('plan-apply').disabled = plan.state !== 'planned' || plan.moves.length === 0
  $('plan-cancel').disabled = !['planned', 'applying'].includes(plan.state)
}

async function choosePlan(id) {
  state.planId = id
  await refresh()
}

// ---- refresh ---------------------------------------------------------------------------------------

/** What each view reads; the shards are read everywhere (the move form offers them). */
const READS = {
  shards: [readShards, readNodes],
  tenants: [readTenants, readTenantStats],
  moves: [readShards, readTenantNames, readMoves],
  plans: [readTenantNames, readPlans, readPlan],
}

async function readShards() {
  state.shards = (await api('GET', '/shards')).shards
}
async function readNodes() {
  state.nodes = (await api('GET', '/nodes')).nodes
}
let tenantsReadAt = 0
async function readTenants() {
  state.tenants = (await api('GET', '/tenants')).tenants
  tenantsReadAt = Date.now()
}
/**
 * The moves and plans views need the tenants only for their names (and the move form's list): read
 * again at most once a minute, not on every 2 s poll. The tenants view reads them every time.
 */
async function readTenantNames() {
  if (state.tenants.length > 0 && Date.now() - tenantsReadAt < 60_000) return
  await readTenants()
}
async function readTenantStats() {
  try {
    const { tenants } = await api('GET', '/stats/tenants')
    state.tenantStats = new Map(tenants.map((t) => [t.tenant, t]))
  } catch (error) {
    // Statistics need Redis; without them the table still lists the tenants.
    if (error.status === 401 || error.status === 403) throw error
    state.tenantStats = new Map()
  }
}
async function readMoves() {
  state.moves = (await api('GET', '/moves')).moves
}
async function readPlans() {
  state.plans = (await api('GET', '/plans')).plans
  if (!state.planId && state.plans[0]) state.planId = state.plans[0].id
}
async function readPlan() {
  state.plan = state.planId ? await api('GET', `/plans/${state.planId}`) : null
}

const DRAW = { shards: drawShards, tenants: drawTenants, moves: drawMoves, plans: drawPlans }

let refreshing = null
/** One refresh at a time; a call during one waits for it and then runs again (an action's result). */
async function refresh() {
  if (!state.key) return
  while (refreshing) await refreshing
  refreshing = (async () => {
    const view = state.view
    try {
      for (const read of READS[view]) await read()
      if (view === state.view) DRAW[view]()
      $('freshness').textContent = `Updated ${new Date().toLocaleTimeString('en-GB')}`
      $('freshness').classList.remove('bad')
    } catch (error) {
      if (signedOutBy(error)) return
      $('freshness').textContent = `Not updated: ${error.message}`
      $('freshness').classList.add('bad')
    }
  })()
  try {
    await refreshing
  } finally {
    refreshing = null
  }
}

/** A 401 or 403 means the key is no longer good: back to the sign-in form, saying why. */
function signedOutBy(error) {
  if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) return false
  signOut(error.status === 403 ? 'That key is not an admin key.' : 'The key was refused; sign in again.')
  return true
}

function show(view) {
  state.view = VIEWS.includes(view) ? view : 'shards'
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== state.view
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === state.view) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
  document.title = `${state.view[0].toUpperCase()}${state.view.slice(1)} — Switchyard console`
  refresh()
}

function signedIn() {
  $('signin').hidden = true
  $('nav').hidden = false
  $('sign-out').hidden = false
  $('freshness').hidden = false
  show(location.hash.slice(1))
  clearInterval(state.timer)
  state.timer = setInterval(() => {
    if (!document.hidden) refresh()
  }, POLL_MS)
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_SLOT)
  state.key = null
  state.drawn.clear()
  clearInterval(state.timer)
  for (const name of VIEWS) $(`view-${name}`).hidden = true
  $('nav').hidden = true
  $('sign-out').hidden = true
  $('freshness').hidden = true
  $('signin').hidden = false
  $('signin-error').textContent = reason ?? ''
  say('')
  $('admin-key').focus()
}

async function signIn(event) {
  event.preventDefault()
  const input = $('admin-key')
  state.key = input.value.trim()
  try {
    await api('GET', '/shards')
  } catch (error) {
    state.key = null
    $('signin-error').textContent =
      error.status === 401
        ? 'That key was refused.'
        : error.status === 403
          ? 'That key is not an admin key.'
          : `Cannot sign in: ${error.message}`
    return
  }
  sessionStorage.setItem(KEY_SLOT, state.key)
  input.value = ''
  $('signin-error').textContent = ''
  signedIn()
}

function startMove(event) {
  event.preventDefault()
  const tenant = $('move-tenant').value.trim()
  const to = $('move-target').value
  act(
    event.submitter,
    () => api('POST', '/moves', { tenant, to }),
    (move) => `Move ${shortId(move.id)} of ${tenant} to ${to} started.`,
  ).then(() => {
    $('move-tenant').value = ''
  })
}

function computePlan(event) {
  event.preventDefault()
  act(
    event.submitter,
    async () => {
      const plan = await api('POST', '/plans', { strategy: $('plan-strategy').value })
      state.planId = plan.id
      return plan
    },
    (plan) =>
      plan.balanced
        ? 'The shards are balanced: the plan moves nothing.'
        : `Plan ${shortId(plan.id)}: ${plan.moves.length} move(s).`,
  )
}

function applyPlan(event) {
  const plan = state.plan
  if (
    !plan ||
    !window.confirm(`Apply plan ${shortId(plan.id)}: ${plan.moves.length} move(s), one at a time?`)
  )
    return
  act(
    event.currentTarget,
    () => api('POST', `/plans/${plan.id}/apply`, {}),
    () => `Plan ${shortId(plan.id)} is applying.`,
  )
}

function cancelPlan(event) {
  const plan = state.plan
  if (!plan) return
  act(
    event.currentTarget,
    () => api('POST', `/plans/${plan.id}/cancel`),
    (p) => `Plan ${shortId(p.id)} is ${p.state}.`,
  )
}

function fillTenantChoices() {
  const ids = state.tenants.slice(0, 1000).map((t) => h('option', { value: t.id }, t.name))
  $('tenant-ids').replaceChildren(...ids)
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', signIn)
  $('sign-out').addEventListener('click', () => signOut('Signed out.'))
  $('tenant-search-form').addEventListener('submit', (event) => event.preventDefault())
  $('tenant-search').addEventListener('input', drawTenants)
  $('move-form').addEventListener('submit', startMove)
  $('move-tenant').addEventListener('focus', fillTenantChoices)
  $('plan-form').addEventListener('submit', computePlan)
  $('plan-apply').addEventListener('click', applyPlan)
  $('plan-cancel').addEventListener('click', cancelPlan)
  window.addEventListener('hashchange', () => state.key && show(location.hash.slice(1)))
  if (state.key) signedIn()
  else $('admin-key').focus()
})
