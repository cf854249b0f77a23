/**
 * The router role's session defaults (`ALTER ROLE … SET`, kept in pg_db_role_setting) that it could have
 * given itself, so SQL that got past the statement policy could have put them there: settings any role may
 * set (pg_settings' context `user`, or one it was granted SET on), and names pg_settings does not know
 * (custom placeholders such as `switchyard.context`, and settings it hides by design such as `seed`).
 * The rest (`temp_file_limit` or `session_preload_libraries`, which only a superuser may set) are the
 * operator's: new router sessions keep them, `migrate` leaves them. Left out too: settings that nobody can
 * reset (PostgreSQL 16+ refuses `RESET seed` and `RESET transaction_read_only`, even to a superuser); as
 * role defaults they do nothing (`seed` from a default never reseeds random(), and enter() reseeds anyway;
 * the transaction's settings are set again when each transaction starts).
 *
 * For the role named by $1, for every database or this one. The same answer read as that role (a new router
 * session, which sees fewer settings: those hidden from it have no NO_SHOW_ALL flag) or as the shard's admin
 * (`migrate`, `doctor`). Names are compared case-insensitively, as PostgreSQL does.
 */
export const ROUTER_OWN_SETTINGS = `
  select e.name, s.setdatabase <> 0 as in_database
  from pg_catalog.pg_db_role_setting s
  cross join lateral (select pg_catalog.split_part(c, '=', 1) as name from pg_catalog.unnest(s.setconfig) c) e
  left join pg_catalog.pg_settings p on pg_catalog.lower(p.name) = pg_catalog.lower(e.name)
  cross join lateral (select pg_catalog.pg_settings_get_flags(e.name) as flags) f
  where s.setrole = (select r.oid from pg_catalog.pg_roles r where r.rolname = $1::name)
    and s.setdatabase in (0, (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()))
    and not coalesce('NO_RESET' = any(f.flags), false)
    and case when p.name is not null
             then p.context = 'user' or pg_catalog.has_parameter_privilege($1::name, p.name, 'SET')
             else f.flags is null or 'NO_SHOW_ALL' = any(f.flags) end
  order by in_database, e.name`

/**
 * The same kind of default in effect in this session (pg_settings' source: a role default, for every
 * database or this one). The catalog can change between a session's start and a look at it (a reset that
 * a replica replays in between): a session is clean when both are.
 */
export const SESSION_OWN_DEFAULTS = `
  select p.name from pg_catalog.pg_settings p
  where p.source in ('user', 'database user')
    and (p.context = 'user' or pg_catalog.has_parameter_privilege(p.name, 'SET'))
  order by p.name`

export interface RoleSetting {
  name: string
  inDatabase: boolean
}

/** `ALTER ROLE … RESET` for one of them; `role` is SQL (an identifier, or current_user). */
export function resetRoleSetting(role: string, database: string, setting: RoleSetting): string {
  const where = setting.inDatabase ? ` in database ${ident(database)}` : ''
  return `alter role ${role}${where} reset ${ident(setting.name)}`
}

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`
