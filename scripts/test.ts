// The test command: type check, lint, format check, then every uvu test file in its
// own process (so a crash or a leaked handle in one file cannot take the others down),
// two at a time. It ends with one line `N passed, N failed` that adds uvu's counts up;
// a file that dies before printing its summary counts as one failure.
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { cpus } from 'node:os'

const FILE_TIMEOUT_MS_MAX = Number(process.env['TEST_FILE_TIMEOUT_MS'] ?? 10 * 60_000)
const PARALLEL_FILES_MAX = Math.max(1, Math.min(2, cpus().length))

interface Outcome {
  name: string
  passed: number
  failed: number
  output: string
  durationMs: number
}

function findTestFiles(directory: string, filter: string | undefined): string[] {
  const found: string[] = []
  for (const name of readdirSync(directory).sort()) {
    const path = join(directory, name)
    if (statSync(path).isDirectory()) found.push(...findTestFiles(path, filter))
    else if (name.endsWith('.test.ts') && (filter === undefined || path.includes(filter)))
      found.push(path)
  }
  return found
}

function runProcess(
  name: string,
  command: string,
  args: string[],
): Promise<{ code: number; output: string; durationMs: number }> {
  const startedMs = Date.now()
  return new Promise((resolve) => {
    // Its own process group, so that a time-out kills the file and every process it started.
    const child = spawn(command, args, {
      detached: true,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (data: Buffer) => (output += data.toString()))
    child.stderr.on('data', (data: Buffer) => (output += data.toString()))
    const timer = setTimeout(() => {
      output += `\n${name}: killed after ${FILE_TIMEOUT_MS_MAX} ms\n`
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {
        // already gone
      }
    }, FILE_TIMEOUT_MS_MAX)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code: code ?? (signal ? 1 : 0), output, durationMs: Date.now() - startedMs })
    })
  })
}

async function runCheck(name: string, command: string, args: string[]): Promise<Outcome> {
  const { code, output, durationMs } = await runProcess(name, command, args)
  return { name, passed: code === 0 ? 1 : 0, failed: code === 0 ? 0 : 1, output, durationMs }
}

async function runTestFile(path: string): Promise<Outcome> {
  const name = relative(process.cwd(), path)
  const { code, output, durationMs } = await runProcess(name, process.execPath, [
    '--import',
    'tsx',
    path,
  ])
  const total = /Total:\s+(\d+)/.exec(output)
  const passed = /Passed:\s+(\d+)/.exec(output)
  const skipped = /Skipped:\s+(\d+)/.exec(output)
  if (!total || !passed) return { name, passed: 0, failed: 1, output, durationMs }
  const failedCount = Number(total[1]) - Number(passed[1]) - Number(skipped?.[1] ?? 0)
  // A file whose tests all passed but which still exited non-zero (an unhandled error
  // after the run, a leaked process) counts one failure more.
  const extra = failedCount === 0 && code !== 0 ? 1 : 0
  return { name, passed: Number(passed[1]), failed: failedCount + extra, output, durationMs }
}

async function runPool<T, R>(
  items: T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  async function worker(): Promise<void> {
    while (next < items.length) {
      const index = next++
      results[index] = await work(items[index]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

function report(outcome: Outcome): void {
  const status = outcome.failed === 0 ? 'ok  ' : 'FAIL'
  console.log(
    `${status} ${outcome.name} (${outcome.passed} passed, ${outcome.failed} failed, ${(outcome.durationMs / 1000).toFixed(1)} s)`,
  )
  if (outcome.failed > 0 || process.env['TEST_VERBOSE'])
    console.log(outcome.output.trimEnd().replace(/^/gm, '    '))
}

const filter = process.argv[2]
const outcomes: Outcome[] = []
const bin = (tool: string): string => join('node_modules', '.bin', tool)
if (filter === undefined) {
  const checks = await Promise.all([
    runCheck('typecheck (tsc --noEmit)', bin('tsc'), ['--noEmit', '-p', '.']),
    runCheck('lint (eslint, prettier --check)', 'sh', [
      '-c',
      `${bin('eslint')} . && ${bin('prettier')} --check . --log-level warn`,
    ]),
  ])
  for (const check of checks) report(check)
  outcomes.push(...checks)
}
const files = findTestFiles('test', filter)
outcomes.push(
  ...(await runPool(files, PARALLEL_FILES_MAX, async (file) => {
    const outcome = await runTestFile(file)
    report(outcome)
    return outcome
  })),
)
const passed = outcomes.reduce((sum, outcome) => sum + outcome.passed, 0)
const failed = outcomes.reduce((sum, outcome) => sum + outcome.failed, 0)
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
