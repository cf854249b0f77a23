import { defineConfig } from 'drizzle-kit'

export default defineConfig({
  dialect: 'postgresql',
  schema: './examples/appointments/schema.ts',
  out: './examples/appointments/migrations',
})
