import { randomBytes } from 'node:crypto'
import { SwitchyardError } from '../errors.ts'
import type { Directory } from './connection.ts'

/**
 * The router capability (invariant 3): the secret a router passes to `switchyard.enter()`, without which
 * no SQL can enter a tenant on a shard. Made once, by the first `switchyard migrate`, which gives every
 * shard its SHA-256; routers read it here when they start.
 */
export async function ensureRouterCapability(directory: Directory): Promise<string> {
  await directory.sql`
    insert into router_capability (id, secret) values (1, ${randomBytes(32).toString('hex')})
    on conflict (id) do nothing`
  return readRouterCapability(directory)
}

export async function readRouterCapability(directory: Directory): Promise<string> {
  const [row] = await directory.sql<{ secret: string }[]>`select secret from router_capability where id = 1`
  if (!row)
    throw new SwitchyardError(
      'capability_missing',
      'the directory has no router capability yet: run `switchyard migrate`',
    )
  return row.secret
}
