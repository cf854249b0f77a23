import { defineTopology } from './src/config/topology.ts'

// The local topology that `switchyard cluster up` starts (ports from DESIGN.md). docker-compose.shards.yml
// publishes the same ports, so this file fits both. Environment variables override it (see README).
const admin = 'switchyard:switchyard'

export default defineTopology({
  directory: `postgres://${admin}@127.0.0.1:5440/switchyard`,
  redis: 'redis://127.0.0.1:6390',
  router: { port: 8080, role: { name: 'switchyard_router', password: 'switchyard_router' } },
  tenantSchema: { migrations: 'examples/appointments/migrations', schemas: ['public'] },
  shards: [1, 2, 3].map((n) => ({
    id: `shard-${n}`,
    primary: `postgres://${admin}@127.0.0.1:544${n}/app`,
    replicas: [`postgres://${admin}@127.0.0.1:545${n}/app`],
    capacity: 100,
    state: 'active' as const,
  })),
})
