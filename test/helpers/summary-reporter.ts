import type { Reporter, TestModule } from 'vitest/node'

/**
 * Ends the run with the plain line `N passed, N failed, N skipped` that CI tooling reads in any
 * language, after vitest's own summary.
 */
export class PlainSummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0
    let failed = 0
    let skipped = 0
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const state = test.result().state
        if (state === 'passed') passed++
        else if (state === 'failed') failed++
        else skipped++
      }
      // A file that failed to load has no tests but is a failure all the same.
      if (mod.state() === 'failed' && mod.children.size === 0) failed++
    }
    // vitest's own summary prints after this hook: write ours as the process ends, so it is last.
    process.once('exit', () => {
      process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`)
    })
  }
}
