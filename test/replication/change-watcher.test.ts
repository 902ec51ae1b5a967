// The change watcher on real files: every kind of change, a burst of 1,000 files in nested
// directories created during the burst, a slowly written file reported once and only when
// complete, the rescan timer, the watched directory and one below it removed and re-created
// (also at once, under the same inode number), the system's
// inotify watches used up (in a user namespace of a child process with a tiny limit), and
// close() leaving nothing behind.
import { spawn } from 'node:child_process'
import { mkdirSync, rmSync, statSync } from 'node:fs'
import { appendFile, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { ClusterError } from '../../consensus/cluster-error.ts'
import { ChangeWatcher, type ChangeWatcherOptions } from '../../node/replication/change-watcher.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'

const WAIT_MS_MAX = 10_000
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Harness {
  readonly directory: string
  readonly watcher: ChangeWatcher
  /** Every path reported, with how many times. */
  readonly reported: Map<string, number>
  readonly warnings: ClusterError[]
  rescans: number
  stop(): Promise<void>
}

async function watched(
  options: Partial<Omit<ChangeWatcherOptions, 'onRescan' | 'onWarning'>> = {},
): Promise<Harness> {
  const directory = await makeTempDir('change-watcher-')
  const harness: Harness = {
    directory,
    reported: new Map(),
    warnings: [],
    rescans: 0,
    watcher: new ChangeWatcher(directory, {
      rescanMs: 60_000,
      ...options,
      onChanges: (paths) => {
        for (const path of paths) harness.reported.set(path, (harness.reported.get(path) ?? 0) + 1)
        options.onChanges?.(paths)
      },
      onRescan: () => harness.rescans++,
      onWarning: (warning) => harness.warnings.push(warning),
    }),
    stop: async () => {
      await harness.watcher.close()
      await removeDir(directory)
    },
  }
  await harness.watcher.start()
  return harness
}

async function waitFor(
  what: string,
  condition: () => boolean,
  explain: () => string = () => '',
): Promise<void> {
  const startedMs = performance.now()
  while (!condition()) {
    if (performance.now() - startedMs > WAIT_MS_MAX)
      assert.unreachable(`timed out waiting for ${what} ${explain()}`)
    await sleep(5)
  }
}

test('create, modify, append, delete and rename are each reported', async () => {
  const harness = await watched()
  const { directory, reported } = harness
  try {
    assert.is(harness.watcher.status, 'watching')
    const expectReported = async (paths: string[], change: () => Promise<void>): Promise<void> => {
      reported.clear()
      await change()
      await waitFor(paths.join(', '), () => paths.every((path) => reported.has(path)))
    }
    await expectReported(['a.txt'], () => writeFile(join(directory, 'a.txt'), 'one'))
    await expectReported(['a.txt'], () => writeFile(join(directory, 'a.txt'), 'two'))
    await expectReported(['a.txt'], () => appendFile(join(directory, 'a.txt'), ' and three'))
    await expectReported(['a.txt', 'b.txt'], () =>
      rename(join(directory, 'a.txt'), join(directory, 'b.txt')),
    )
    await expectReported(['b.txt'], () => rm(join(directory, 'b.txt')))
    await expectReported(['deep', 'deep/er', 'deep/er/c.txt'], async () => {
      await mkdir(join(directory, 'deep/er'), { recursive: true })
      await writeFile(join(directory, 'deep/er/c.txt'), 'nested')
    })
    await expectReported(['deep/er/c.txt'], () => appendFile(join(directory, 'deep/er/c.txt'), '!'))
    assert.equal(harness.warnings, [])
  } finally {
    await harness.stop()
  }
})

test('a burst of 1,000 files in nested directories created during the burst: every file is reported', async () => {
  const harness = await watched()
  const { directory, reported } = harness
  try {
    const expected: string[] = []
    for (let index = 0; index < 1000; index++) {
      const folder = `level-${index % 10}/sub-${index % 7}/leaf-${index % 3}`
      if (index < 210) await mkdir(join(directory, folder), { recursive: true })
      const path = `${folder}/file-${index}.txt`
      await writeFile(join(directory, path), `content ${index}`)
      expected.push(path)
    }
    await waitFor(
      'all 1,000 files',
      () => expected.every((path) => reported.has(path)),
      () =>
        `(missing: ${expected
          .filter((path) => !reported.has(path))
          .slice(0, 5)
          .join(', ')})`,
    )
    assert.is(harness.rescans, 0, 'no path was dropped for a rescan')
  } finally {
    await harness.stop()
  }
})

test('a directory moved within the tree: its files are reported under the new name, never the old', async () => {
  const harness = await watched()
  const { directory, reported } = harness
  try {
    await mkdir(join(directory, 'from/inner'), { recursive: true })
    await writeFile(join(directory, 'from/inner/a.txt'), 'a')
    await waitFor('the first file', () => reported.has('from/inner/a.txt'))
    await rename(join(directory, 'from'), join(directory, 'to'))
    await waitFor('the moved file', () => reported.has('to/inner/a.txt'))
    reported.clear()
    await writeFile(join(directory, 'to/inner/b.txt'), 'b')
    await appendFile(join(directory, 'to/inner/a.txt'), '!')
    await waitFor('changes in the moved directory', () =>
      ['to/inner/b.txt', 'to/inner/a.txt'].every((path) => reported.has(path)),
    )
    await sleep(100)
    const stale = [...reported.keys()].filter((path) => path.startsWith('from/'))
    assert.equal(stale, [], 'nothing is reported under the name the directory left')
  } finally {
    await harness.stop()
  }
})

test('a directory moved in from outside: everything in it is reported, and then watched', async () => {
  const harness = await watched()
  const { directory, reported } = harness
  const outside = await makeTempDir('change-watcher-outside-')
  try {
    await mkdir(join(outside, 'tree/a/b'), { recursive: true })
    await writeFile(join(outside, 'tree/a/b/deep.txt'), 'deep')
    await writeFile(join(outside, 'tree/top.txt'), 'top')
    await rename(join(outside, 'tree'), join(directory, 'tree'))
    await waitFor('every path of the moved-in tree', () =>
      ['tree', 'tree/a', 'tree/a/b', 'tree/a/b/deep.txt', 'tree/top.txt'].every((path) =>
        reported.has(path),
      ),
    )
    await writeFile(join(directory, 'tree/a/b/later.txt'), 'later')
    await waitFor('a file written inside it afterwards', () => reported.has('tree/a/b/later.txt'))
  } finally {
    await harness.stop()
    await removeDir(outside)
  }
})

test('a directory removed and made again: the new one is watched', async () => {
  const harness = await watched()
  const { directory, reported } = harness
  try {
    await mkdir(join(directory, 'again'))
    await writeFile(join(directory, 'again/one.txt'), '1')
    await waitFor('the first file', () => reported.has('again/one.txt'))
    await rm(join(directory, 'again'), { recursive: true })
    await mkdir(join(directory, 'again'))
    reported.clear()
    await writeFile(join(directory, 'again/two.txt'), '2')
    await waitFor('a file in the new directory', () => reported.has('again/two.txt'))
  } finally {
    await harness.stop()
  }
})

test('a directory removed and made again at once, under the same inode number: the new one is watched', async () => {
  const harness = await watched()
  const { directory, reported } = harness
  try {
    const again = join(directory, 'again')
    await mkdir(again)
    await writeFile(join(again, 'one.txt'), '1')
    await waitFor('the first file', () => reported.has('again/one.txt'))
    const before = statSync(again).ino
    // In one step, so that the watcher looks only once both are done: ext4 gives the new
    // directory the inode number the old one had, and only its birth time tells them apart.
    rmSync(again, { recursive: true })
    mkdirSync(again)
    const reused = statSync(again).ino === before
    reported.clear()
    await sleep(100)
    await writeFile(join(again, 'two.txt'), '2')
    await waitFor(`a file in the new directory (inode number reused: ${reused})`, () =>
      reported.has('again/two.txt'),
    )
  } finally {
    await harness.stop()
  }
})

test('a file written slowly is reported once, only when it is complete', async () => {
  const STABLE_MS = 300
  const reports: { size: number; atMs: number }[] = []
  let harness: Harness | null = null
  const chunk = 'x'.repeat(1000)
  harness = await watched({
    debounceMs: 20,
    stableMs: STABLE_MS,
    onChanges: (paths) => {
      const atMs = performance.now()
      if (paths.has('slow.log'))
        void stat(join(harness!.directory, 'slow.log')).then((found) =>
          reports.push({ size: found.size, atMs }),
        )
    },
  })
  try {
    const path = join(harness.directory, 'slow.log')
    let lastWriteMs = 0
    // Pauses longer than debounceMs, so that only the stability check holds the file back.
    for (let write = 0; write < 8; write++) {
      await sleep(40)
      await appendFile(path, chunk)
      lastWriteMs = performance.now()
    }
    await waitFor('the slow file', () => reports.length > 0)
    await sleep(STABLE_MS)
    assert.equal(
      reports.map((report) => report.size),
      [8 * chunk.length],
    )
    // File times come from a clock that may lag by a scheduler tick (a few ms).
    const stillMs = reports[0]!.atMs - lastWriteMs
    assert.ok(stillMs >= STABLE_MS - 15, `reported ${stillMs} ms after the last write`)
  } finally {
    await harness.stop()
  }
})

test('a file that never settles is still reported, after stableWaitMsMax', async () => {
  const harness = await watched({ debounceMs: 5, stableMs: 100, stableWaitMsMax: 300 })
  try {
    const path = join(harness.directory, 'busy.log')
    const startedMs = performance.now()
    while (!harness.reported.has('busy.log')) {
      assert.ok(performance.now() - startedMs < 3000, 'reported within a few times stableWaitMsMax')
      await appendFile(path, 'line\n')
      await sleep(10)
    }
    assert.ok(performance.now() - startedMs >= 250)
  } finally {
    await harness.stop()
  }
})

test('the rescan timer fires every rescanMs', async () => {
  const harness = await watched({ rescanMs: 100 })
  try {
    await sleep(450)
    assert.ok(harness.rescans >= 3 && harness.rescans <= 5, `${harness.rescans} rescans in 450 ms`)
  } finally {
    await harness.stop()
  }
})

test('more pending paths than the bound: one rescan instead, once the burst calms down', async () => {
  const harness = await watched({ pendingPathsMax: 50, debounceMs: 20, stableMs: 20 })
  try {
    await Promise.all(
      Array.from({ length: 300 }, (_, index) =>
        writeFile(join(harness.directory, `f${index}`), 'x'),
      ),
    )
    await waitFor('the rescan', () => harness.rescans > 0)
    await sleep(200)
    // One rescan once the burst calms down; a burst with pauses longer than
    // debounceMs + stableMs may overflow the bound again after a pause.
    assert.ok(harness.rescans <= 300 / 50, `${harness.rescans} rescans, not one per path`)
    assert.ok(harness.reported.size < 300, 'dropped paths are left to the rescan')
    // Tracking resumes afterwards.
    await writeFile(join(harness.directory, 'after.txt'), 'y')
    await waitFor('a file after the burst', () => harness.reported.has('after.txt'))
  } finally {
    await harness.stop()
  }
})

test('the directory removed and re-created: no rescan while it is gone, then watching again', async () => {
  const harness = await watched({ rescanMs: 80, watchRetryMsMin: 20 })
  const { directory } = harness
  try {
    await writeFile(join(directory, 'before.txt'), 'x')
    await waitFor('a file', () => harness.reported.has('before.txt'))
    await rm(directory, { recursive: true })
    await waitFor('the directory to be missed', () => harness.watcher.status === 'missing')
    assert.match(
      harness.warnings[0]?.message ?? '',
      /cannot watch .* \(ENOENT\); no rescan until it is back/,
      harness.warnings.map((warning) => warning.message).join(' / '),
    )
    const rescansWhileGone = harness.rescans
    await sleep(300)
    assert.is(harness.rescans, rescansWhileGone, 'a missing directory is never rescanned')
    assert.is(harness.warnings.length, 1, 'one warning, not one per retry')
    await mkdir(directory)
    await waitFor('watching again', () => harness.watcher.status === 'watching')
    assert.ok(harness.rescans > rescansWhileGone, 'a rescan catches up on what happened meanwhile')
    await writeFile(join(directory, 'after.txt'), 'y')
    await waitFor('a file in the new directory', () => harness.reported.has('after.txt'))
  } finally {
    await harness.stop()
  }
})

test('the directory replaced by another at the same path: the new one is watched, the old one not', async () => {
  const harness = await watched({ watchRetryMsMin: 20 })
  const { directory } = harness
  const moved = `${directory}-moved`
  try {
    await rename(directory, moved)
    await mkdir(directory)
    await waitFor('a catch-up rescan', () => harness.rescans === 1)
    assert.is(harness.watcher.status, 'watching')
    await writeFile(join(moved, 'old.txt'), 'x')
    await writeFile(join(directory, 'new.txt'), 'y')
    await waitFor('the file in the new directory', () => harness.reported.has('new.txt'))
    await sleep(100)
    assert.not.ok(harness.reported.has('old.txt'), 'the moved directory is no longer watched')
  } finally {
    await harness.stop()
    await removeDir(moved)
  }
})

test('close() stops every watch and timer: nothing is reported afterwards', async () => {
  const resourcesBefore = activeWatchesAndTimers()
  const harness = await watched({ rescanMs: 50 })
  await writeFile(join(harness.directory, 'pending.txt'), 'x')
  await sleep(2)
  await harness.watcher.close()
  assert.is(harness.watcher.status, 'closed')
  const reportedAtClose = harness.reported.size
  const rescansAtClose = harness.rescans
  await writeFile(join(harness.directory, 'later.txt'), 'y')
  await sleep(200)
  assert.is(harness.reported.size, reportedAtClose)
  assert.is(harness.rescans, rescansAtClose)
  assert.equal(activeWatchesAndTimers(), resourcesBefore)
  await harness.stop()
})

function activeWatchesAndTimers(): string[] {
  return process
    .getActiveResourcesInfo()
    .filter((name) => name === 'FSEventWrap' || name === 'Timeout' || name === 'Immediate')
    .sort()
}

// A child process in its own user namespace, where the inotify watch limit can be set for it alone.
const NAMESPACE_SCRIPT = `
import { writeFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
const { ChangeWatcher } = await import(process.env.WATCHER_MODULE)
const directory = process.env.WATCHED
const say = (event) => process.stdout.write(JSON.stringify(event) + '\\n')
const limit = '/proc/sys/user/max_inotify_watches'
writeFileSync(limit, '40')
const watcher = new ChangeWatcher(directory, {
  rescanMs: 100, watchRetryMsMin: 50,
  onChanges: (paths) => say({ changes: [...paths] }),
  onRescan: () => say({ rescan: true }),
  onWarning: (warning) => say({ warning: warning.code + ': ' + warning.message }),
})
await watcher.start()
say({ status: watcher.status })
await new Promise((resolve) => setTimeout(resolve, 250))
writeFileSync(limit, '100000')
while (watcher.status !== 'watching') await new Promise((resolve) => setTimeout(resolve, 10))
say({ status: watcher.status })
await writeFile(directory + '/after.txt', 'x')
await new Promise((resolve) => setTimeout(resolve, 300))
await watcher.close()
say({ status: watcher.status })
`

test('the system out of inotify watches: a warning, rescans only, then watching again', async () => {
  if (!(await canUnshare())) {
    console.log('  (skipped: this machine cannot make a user namespace with `unshare -U -r`)')
    return
  }
  const directory = await makeTempDir('change-watcher-enospc-')
  try {
    // One watch per directory: 100 of them need more than the 40 the child may set.
    for (let index = 0; index < 100; index++) await mkdir(join(directory, `d${index}`))
    const { code, output } = await runChild(
      [
        'unshare',
        '-U',
        '-r',
        process.execPath,
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        NAMESPACE_SCRIPT,
      ],
      {
        WATCHED: directory,
        WATCHER_MODULE: new URL('../../node/replication/change-watcher.ts', import.meta.url).href,
      },
    )
    assert.is(code, 0, output)
    const events = output
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    const statuses = events.filter((event) => 'status' in event).map((event) => event.status)
    assert.equal(statuses, ['degraded', 'watching', 'closed'], output)
    const warnings = events.filter((event) => 'warning' in event).map((event) => event.warning)
    assert.is(warnings.length, 1, output)
    assert.match(
      String(warnings[0]),
      /^IO_ERROR: watching .* failed: the system's inotify watches are used up/,
    )
    const statusWatching = events.findIndex((event) => event.status === 'watching')
    assert.ok(
      events.slice(1, statusWatching).some((event) => event.rescan),
      'rescans while degraded',
    )
    assert.ok(
      events
        .slice(statusWatching)
        .some((event) => (event.changes as string[] | undefined)?.includes('after.txt')),
      output,
    )
  } finally {
    await removeDir(directory)
  }
})

async function canUnshare(): Promise<boolean> {
  const { code } = await runChild(['unshare', '-U', '-r', 'true'], {})
  return code === 0
}

function runChild(
  command: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command[0]!, command.slice(1), {
      cwd: new URL('../..', import.meta.url).pathname,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (data: Buffer) => (output += data.toString()))
    child.stderr.on('data', (data: Buffer) => (output += data.toString()))
    const timer = setTimeout(
      () => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'),
      WAIT_MS_MAX,
    )
    child.on('error', () => resolve({ code: null, output }))
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
}

test.run()
