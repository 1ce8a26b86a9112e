#!/usr/bin/env node
// Node 20 cannot run .ts itself. The CLI runs from a bundle of the sources made by esbuild and
// checked against them at every start (build.mjs), made now when missing or out of date; where
// it cannot be made (no esbuild, a read-only node_modules), from source through tsx's loader.
import { buildBundle, freshBundle } from './build.mjs'

const bundle = freshBundle() ?? (await buildBundle())
if (bundle) {
  // Stack traces name the source files, not the bundle's lines.
  process.setSourceMapsEnabled(true)
  await import(bundle)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('./cli.ts')
}
