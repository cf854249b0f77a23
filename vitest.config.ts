import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One real topology (directory, 3 × primary + replica, Redis) for the whole run.
    globalSetup: ['test/setup/topology.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Files share one topology and some change it for a moment (doctor, capacity): run them one at a time.
    fileParallelism: false,
  },
})
