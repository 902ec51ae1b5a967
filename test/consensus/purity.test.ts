// consensus/ is a pure state machine (STYLE.md §1): no I/O, clocks, timers, global
// randomness or asynchrony. ESLint enforces most of it; this test checks the source too,
// so that a rule switched off in the lint config cannot let one slip in.
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'

const FORBIDDEN: [RegExp, string][] = [
  [/from\s+['"]node:/, 'a node: import'],
  [/import\(/, 'a dynamic import'],
  [/\bDate\b/, 'the clock (Date)'],
  [/\bperformance\b/, 'the clock (performance)'],
  [/Math\.random/, 'global randomness'],
  [/\b(setTimeout|setInterval|setImmediate|queueMicrotask)\b/, 'a timer'],
  [/\b(await|async)\b/, 'asynchrony'],
  [/\bPromise\b/, 'a Promise'],
  [/\bprocess\b/, 'the process'],
  [/\b(fetch|require)\(/, 'I/O'],
]

/** The source without comments and string contents, so that only code is checked. */
const codeOf = (source: string): string =>
  source
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/(['"`])(?:\\.|(?!\1)[^\\])*\1/g, (literal) =>
      literal.startsWith("'node:") || literal.startsWith('"node:') ? literal : "''",
    )

test('consensus/ uses no I/O, clock, timer, global randomness or asynchrony', () => {
  const directory = join(import.meta.dirname, '../../consensus')
  const files = readdirSync(directory).filter((name) => name.endsWith('.ts'))
  assert.ok(files.length >= 10)
  for (const name of files) {
    const code = codeOf(readFileSync(join(directory, name), 'utf8'))
    for (const [pattern, what] of FORBIDDEN) assert.not.match(code, pattern, `${name} uses ${what}`)
  }
})

test('the check itself catches what it is meant to', () => {
  assert.match(codeOf("import { readFile } from 'node:fs'"), FORBIDDEN[0]![0])
  assert.match(codeOf('const now = Date.now()'), FORBIDDEN[2]![0])
  assert.not.match(codeOf('// no Date here'), FORBIDDEN[2]![0])
})

test.run()
