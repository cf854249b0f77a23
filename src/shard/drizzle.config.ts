import { defineConfig } from 'drizzle-kit'

export default defineConfig({
  dialect: 'postgresql',
  schema: './src/shard/schema.ts',
  out: './src/shard/migrations',
})
