import { configDefaults, defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // `vitest run` runs both; `npm run test:unit` (`--project unit`) boots nothing.
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          // Tests that need no topology: pure functions, in parallel.
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'topology',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'test/unit/**'],
          // One real topology (directory, 3 × primary + replica, Redis) for the whole run.
          globalSetup: ['test/setup/topology.ts'],
          // Files share one topology and some change it for a moment (doctor, capacity): run them one at a time.
          fileParallelism: false,
        },
      },
    ],
  },
})
