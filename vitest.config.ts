import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/helpers/global-postgres.ts'],
          setupFiles: ['test/helpers/setup-processes.ts'],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          // Files share one Postgres server (each gets its own database); two at a time fit two cores.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
          fileParallelism: true,
        },
      },
      {
        test: {
          name: 'chaos',
          include: ['test/chaos/**/*.test.ts'],
          setupFiles: ['test/helpers/setup-processes.ts'],
          // Its own Postgres (test/helpers/server.ts), restarted mid-run; ~95 s (CHAOS_SECONDS=90 of chaos).
          testTimeout: 600_000,
          hookTimeout: 180_000,
          // Alone on the machine, after the integration suite: its figures are timings.
          maxWorkers: 1,
          fileParallelism: false,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
