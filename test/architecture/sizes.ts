import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import ts from 'typescript'

/**
 * Module and function sizes of the production tree, measured with the TypeScript parser: the
 * house keeps modules under MAX_MODULE_LINES and functions (a factory's closure included) under
 * MAX_FUNCTION_LINES, so each reads as named parts rather than one long body.
 */
export const MAX_MODULE_LINES = 400
export const MAX_FUNCTION_LINES = 120

export interface Sized {
  file: string
  name: string
  lines: number
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return sourceFiles(path)
    return name.endsWith('.ts') ? [path] : []
  })
}

function nameOf(node: ts.Node): string {
  const named = node as { name?: ts.Node }
  if (named.name && ts.isIdentifier(named.name)) return named.name.text
  const parent = node.parent
  if (parent && ts.isVariableDeclaration(parent) && ts.isIdentifier(parent.name))
    return parent.name.text
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText()
  return '(anonymous)'
}

/** Every function-like body in `source`, with its length in lines. */
export function functionSizes(file: string, source: string): Sized[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.ES2022, true)
  const out: Sized[] = []
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && (node as { body?: ts.Node }).body) {
      const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line
      const end = sf.getLineAndCharacterOfPosition(node.getEnd()).line
      out.push({ file, name: nameOf(node), lines: end - start + 1 })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

/** Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES in `folders` under `root`. */
export function oversized(root: string, folders = ['services', 'machines', 'db', 'deploy']) {
  const modules: Sized[] = []
  const functions: Sized[] = []
  for (const folder of folders) {
    for (const path of sourceFiles(join(root, folder))) {
      const file = relative(root, path).split(sep).join('/')
      const source = readFileSync(path, 'utf8')
      const lines = source.split('\n').length
      if (lines > MAX_MODULE_LINES) modules.push({ file, name: file, lines })
      for (const f of functionSizes(file, source))
        if (f.lines > MAX_FUNCTION_LINES) functions.push(f)
    }
  }
  return { modules, functions }
}

// `node --import tsx test/architecture/sizes.ts [root]`: print what is over.
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split(sep).join('/'))) {
  const result = oversized(process.argv[2] ?? process.cwd())
  for (const m of result.modules) console.log(`module   ${m.lines} ${m.file}`)
  for (const f of result.functions) console.log(`function ${f.lines} ${f.file} ${f.name}`)
}
