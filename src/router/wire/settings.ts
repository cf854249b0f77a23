import { SwitchyardError } from '../../errors.ts'
import { checkedApiRequest } from '../admission.ts'
import type { SplitStatement } from '../policy.ts'
import { commandComplete, type MessageWriter, parameterStatus, rowDescription } from './protocol.ts'

/**
 * A session's settings as its client sees them. They stay in the router: a shard connection serves
 * many tenants, and every transaction starts from the router's own session (enter() resets it), so a
 * client's SET can never reach another tenant. What drivers set at startup is accepted where the
 * shards already behave that way (UTF8, ISO dates, the shards' time zone), or where it only names the
 * client (application_name); anything that would change what the shard does is refused with 0A000.
 */
export interface SessionSettings {
  values: Map<string, string>
}

/** The setting that names the API request a session's statements serve, and what it may hold. */
export const API_REQUEST = 'switchyard.request'

/** The API request the session's statements serve now, if it names one. */
export function apiRequestOf(settings: SessionSettings | undefined): string | undefined {
  const value = settings?.values.get(API_REQUEST)
  return value ? value : undefined
}

/** Settings PostgreSQL reports to the client whenever they change (GUC_REPORT), by their lowercase name. */
const REPORTED: Record<string, string> = {
  application_name: 'application_name',
  client_encoding: 'client_encoding',
  datestyle: 'DateStyle',
  intervalstyle: 'IntervalStyle',
  timezone: 'TimeZone',
  standard_conforming_strings: 'standard_conforming_strings',
}

/** What SET may change, and to what: the value as the session will show it, or a refusal. */
const SETTABLE: Record<string, (value: string, settings: SessionSettings) => string> = {
  application_name: (value) => {
    if (Buffer.byteLength(value) > 63) throw refused('application_name is longer than 63 bytes')
    return value
  },
  // The application's API request the next statements serve (issue 19): what x-switchyard-request is
  // over HTTP. Counted once an hour against the tenant's api_rate_limit; '' (or RESET) names none.
  [API_REQUEST]: (value) => (value === '' ? value : checkedApiRequest(value, API_REQUEST)),
  // Any value: since PostgreSQL 12 every positive value means "shortest exact", which the shards use.
  extra_float_digits: (value) => {
    const digits = Number(value)
    if (!Number.isInteger(digits) || digits < -15 || digits > 3)
      throw refused('extra_float_digits must be an integer from -15 to 3')
    return String(digits)
  },
  client_encoding: (value) => only(value, ['UTF8', 'UTF-8', 'UNICODE'], 'UTF8', 'client_encoding'),
  datestyle: (value, settings) =>
    only(
      value.replace(/\s+/g, ''),
      ['ISO', 'ISO,MDY'],
      settings.values.get('datestyle') ?? 'ISO, MDY',
      'DateStyle',
    ),
  intervalstyle: (value) => only(value, ['postgres'], 'postgres', 'IntervalStyle'),
  standard_conforming_strings: (value) => only(value, ['on', 'true'], 'on', 'standard_conforming_strings'),
  timezone: (value, settings) => {
    const current = settings.values.get('timezone') ?? 'UTC'
    return only(value, [current], current, 'TimeZone')
  },
}

function only(value: string, allowed: string[], shown: string, name: string): string {
  if (allowed.some((one) => one.toLowerCase() === value.toLowerCase())) return shown
  throw refused(`${name} can only be ${allowed[0]} through the router (the shards' setting)`)
}

const refused = (message: string) => new SwitchyardError('feature_not_supported', message)

/** The session's settings; RESET (and SET … TO DEFAULT, SET TIME ZONE LOCAL) goes back to the first value. */
export function createSettings(initial: Record<string, string>): SessionSettings {
  const values = new Map(Object.entries(initial).map(([name, value]) => [name.toLowerCase(), value]))
  for (const [name, value] of [...values])
    if (!name.startsWith('default:') && !values.has(`default:${name}`)) values.set(`default:${name}`, value)
  return { values }
}

/**
 * The answer to a statement the router handles itself (SET, RESET, SHOW, DISCARD ALL), or undefined for
 * one the shard runs (transaction control is the session's: block.ts). `described`: the client already
 * has the columns (an Execute after its Describe), so SHOW's RowDescription is left out.
 */
export type LocalAnswer = (writer: MessageWriter, described: boolean) => void

export function localStatement(
  statement: SplitStatement,
  settings: SessionSettings,
): LocalAnswer | undefined {
  switch (statement.type) {
    case 'VariableSetStmt':
      return set(statement.node, settings)
    case 'VariableShowStmt':
      return show(String(statement.node.name ?? ''), settings)
    case 'DiscardStmt':
      // DISCARD ALL is what poolers send when a client leaves: nothing of this session is on a shard. The
      // API request it named goes: the pooler's next client serves another.
      settings.values.set(API_REQUEST, '')
      return (writer) => commandComplete(writer, 'DISCARD ALL')
    default:
      return undefined
  }
}

function set(node: Record<string, unknown>, settings: SessionSettings) {
  const name = String(node.name ?? '').toLowerCase()
  const kind = String(node.kind ?? '')
  if (node.is_local) throw refused('SET LOCAL is not supported: each statement runs in its own transaction')
  const change = SETTABLE[name]
  if (!change) throw refused(`SET ${name || kind} is not supported through the router`)
  const reset = kind === 'VAR_SET_DEFAULT' || kind === 'VAR_RESET'
  if (!reset && kind !== 'VAR_SET_VALUE') throw refused(`SET ${name} in this form is not supported`)
  const value = reset ? (settings.values.get(`default:${name}`) ?? '') : argText(node.args)
  const shown = reset ? value : change(value, settings)
  settings.values.set(name, shown)
  return (writer: MessageWriter) => {
    const reported = REPORTED[name]
    if (reported) parameterStatus(writer, reported, shown)
    commandComplete(writer, reset ? 'RESET' : 'SET')
  }
}

/** SET's values as text: strings, numbers and bare words, a list joined as PostgreSQL shows it. */
function argText(args: unknown): string {
  const values = (Array.isArray(args) ? args : []).map((arg) => {
    const constant = (arg as { A_Const?: Record<string, Record<string, unknown>> }).A_Const ?? {}
    const [value] = Object.values(constant)
    if (!value) return ''
    return String(value.sval ?? value.ival ?? value.fval ?? value.boolval ?? '')
  })
  return values.join(', ')
}

/** SHOW's one column: text, named after the setting. */
export function showColumn(name: string) {
  return {
    name: name.toLowerCase(),
    tableID: 0,
    columnID: 0,
    dataTypeID: 25,
    dataTypeSize: -1,
    dataTypeModifier: -1,
  }
}

function show(name: string, settings: SessionSettings) {
  const key = name.toLowerCase()
  const value =
    key === 'transaction_isolation'
      ? 'read committed'
      : key.startsWith('default:')
        ? undefined
        : settings.values.get(key)
  if (value === undefined) {
    const error = new SwitchyardError('sql_error', `unrecognized configuration parameter "${name}"`)
    error.cause = { code: '42704', message: `unrecognized configuration parameter "${name}"` }
    throw error
  }
  return (writer: MessageWriter, described: boolean) => {
    if (!described) rowDescription(writer, [showColumn(key)], [])
    const bytes = Buffer.from(value)
    writer.begin('D').uint16(1).int32(bytes.length).raw(bytes).end()
    commandComplete(writer, 'SHOW')
  }
}
