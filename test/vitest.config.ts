import { defineConfig } from 'vitest/config'
import { PlainSummaryReporter } from './helpers/summary-reporter.ts'

export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    exclude: ['test/runtime/**', 'node_modules/**'],
    pool: 'forks',
    // Two cores on CI: more workers only add context switches to socket-heavy tests.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    setupFiles: ['test/helpers/setup.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default', new PlainSummaryReporter()],
  },
})
