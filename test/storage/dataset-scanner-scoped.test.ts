// Scoped scans (what a change watcher asks for) on real files. Most scenarios run on twins:
// two datasets of one store over the same directory, one scanned with scopes, the other
// with full scans; the scoped twin must record exactly what the full one recorded for the
// paths in its scopes, and a full scan of the scoped twin afterwards must record nothing.
// Where the twins would disagree by design (a rename across a scope's edge, a scope the full
// twin has already seen), the scoped twin scans alone.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { appendFile, mkdir, rename, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import {
  RACY_MARGIN_NS,
  READ_AHEAD_FILES_MAX,
  SCAN_SCOPES_MAX,
  type ScanChange,
  type ScanResult,
} from '../../storage/dataset-scanner.ts'
import { isWithin, type DatasetPath } from '../../storage/version-record.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { StoreChild } from './fixtures/child-process.ts'
import {
  PAST_MTIME_MS,
  contentBytes,
  indexedTree,
  readAll,
  snapshotTree,
  writeDatasetFile,
} from './fixtures/dataset-tree.ts'

const path = (text: string): DatasetPath => text as DatasetPath
/** Files changed (their ctime: just now) within the racy margin of a scan are read again by the next one. */
const pastRacyMargin = (): Promise<void> => sleep(Number(RACY_MARGIN_NS / 1_000_000n) + 100)
const describe = (change: ScanChange): string =>
  `${change.kind} ${change.from === null ? '' : `${change.from} -> `}${change.path}`
const kinds = (result: ScanResult): string[] => result.changes.map(describe)

interface Twins {
  readonly root: string
  readonly scoped: Dataset
  readonly full: Dataset
  /** Scans `scopes` on the scoped twin and the whole tree on the other; both must agree on the scopes. */
  scan(scopes: readonly string[]): Promise<ScanResult>
  /** A full scan of the scoped twin records nothing, and its index holds what the disk holds. */
  assertConverged(): Promise<void>
}

function withTwins(body: (twins: Twins) => Promise<void>): () => Promise<void> {
  return async () => {
    const directory = await makeTempDir('scanner-scoped-')
    const store = await NodeStore.open(join(directory, 'data'))
    try {
      const root = join(directory, 'set')
      await mkdir(root)
      const scoped = await store.ownDataset('scoped')
      const full = await store.ownDataset('full')
      await body({
        root,
        scoped,
        full,
        async scan(scopes) {
          const result = await scoped.scan(root, { scopes })
          const inScopes = (change: ScanChange): boolean =>
            [change.path, change.from ?? change.path].every((each) =>
              result.scopes!.some((scope) => isWithin(each, scope)),
            )
          const reference = await full.scan(root)
          assert.equal(kinds(result), reference.changes.filter(inScopes).map(describe))
          return result
        },
        async assertConverged() {
          assert.equal(kinds(await scoped.scan(root)), [], 'a full scan records nothing new')
          const onDisk = (await snapshotTree(root)).filter((entry) => entry.type !== 'other')
          assert.equal(await indexedTree(scoped.reader), onDisk)
        },
      })
    } finally {
      await store.close()
      await removeDir(directory)
    }
  }
}

/** Writes the files and scans them whole on both twins: the starting point of a scenario. */
async function start(twins: Twins, files: Record<string, string>): Promise<void> {
  for (const [name, content] of Object.entries(files))
    await writeDatasetFile(twins.root, name, content)
  await twins.scoped.scan(twins.root)
  await twins.full.scan(twins.root)
}

async function latestKind(dataset: Dataset, name: string): Promise<string | null> {
  return (await dataset.index.latest(path(name)))?.kind ?? null
}

test(
  'create, modify, append and delete are recorded for the scopes only, reading only their files',
  withTwins(async (twins) => {
    const { root } = twins
    await start(twins, { 'edited.txt': 'v1', 'log.txt': 'line 1\n', 'gone.txt': 'bye' })
    await writeDatasetFile(root, 'new.txt', 'new')
    await writeDatasetFile(root, 'edited.txt', 'v2', { mtimeMs: PAST_MTIME_MS + 1 })
    await appendFile(join(root, 'log.txt'), 'line 2\n')
    await unlink(join(root, 'gone.txt'))
    await writeDatasetFile(root, 'outside.txt', 'not in a scope')
    await pastRacyMargin()

    const result = await twins.scan(['new.txt', 'edited.txt', 'log.txt', 'gone.txt'])
    assert.equal(kinds(result), ['delete gone.txt', 'put edited.txt', 'put log.txt', 'put new.txt'])
    assert.is(result.filesRead, 3)
    assert.is(await latestKind(twins.scoped, 'outside.txt'), null)
    const log = await twins.scoped.reader.fileVersion(path('log.txt'))
    assert.is((await readAll(await twins.scoped.reader.open(log))).toString(), 'line 1\nline 2\n')

    // Unchanged files in scope are known by their scan state and not read again.
    const again = await twins.scoped.scan(root, { scopes: ['edited.txt', 'log.txt', 'new.txt'] })
    assert.equal([kinds(again), again.filesRead], [[], 0])
    await twins.scoped.scan(root, { scopes: ['outside.txt'] })
    await twins.assertConverged()
  }),
)

test(
  'a rename with both paths in scope is a rename; with only the target in scope it is a put, and the source stays until its own scope',
  withTwins(async (twins) => {
    const { root } = twins
    await start(twins, {
      'old.txt': 'moved whole',
      'dir/inner.txt': 'moved out of a directory',
      'source.txt': 'copied content',
    })
    await rename(join(root, 'old.txt'), join(root, 'new.txt'))
    await rename(join(root, 'dir/inner.txt'), join(root, 'outer.txt'))
    const renamed = await twins.scan(['new.txt', 'old.txt', 'outer.txt', 'dir/inner.txt'])
    assert.equal(kinds(renamed), ['rename old.txt -> new.txt', 'rename dir/inner.txt -> outer.txt'])

    await rename(join(root, 'source.txt'), join(root, 'target.txt'))
    const half = await twins.scoped.scan(root, { scopes: ['target.txt'] })
    assert.equal(kinds(half), ['put target.txt'])
    assert.is(await latestKind(twins.scoped, 'source.txt'), 'file')
    const later = await twins.scoped.scan(root, { scopes: ['source.txt'] })
    assert.equal(kinds(later), ['delete source.txt'])
    await twins.scoped.scan(root, { scopes: ['dir'] })
    await twins.assertConverged()
  }),
)

test(
  'a directory created with files in it, a directory renamed, a directory removed with its subtree',
  withTwins(async (twins) => {
    const { root } = twins
    await start(twins, { 'doomed/a/b/deep.txt': 'deep', 'doomed/top.txt': 'top', 'moved/f': 'f' })
    await writeDatasetFile(root, 'fresh/one.txt', 'one')
    await writeDatasetFile(root, 'fresh/sub/two.txt', 'two')
    // As a watcher reports them: the directory and each entry created in it.
    const created = await twins.scan(['fresh', 'fresh/one.txt', 'fresh/sub', 'fresh/sub/two.txt'])
    assert.equal(kinds(created), [
      'put fresh/one.txt',
      'put fresh/sub/two.txt',
      'directory fresh/sub',
      'directory fresh',
    ])
    assert.equal(created.scopes, ['fresh'])

    await rename(join(root, 'moved'), join(root, 'renamed'))
    assert.equal(kinds(await twins.scan(['moved', 'renamed'])), [
      'rename moved/f -> renamed/f',
      'delete moved',
      'directory renamed',
    ])

    await rm(join(root, 'doomed'), { recursive: true })
    assert.equal(kinds(await twins.scan(['doomed/a', 'doomed'])), [
      'delete doomed/top.txt',
      'delete doomed/a/b/deep.txt',
      'delete doomed/a/b',
      'delete doomed/a',
      'delete doomed',
    ])
    await twins.assertConverged()
  }),
)

test(
  'a file replaced by a directory and a directory replaced by a file',
  withTwins(async (twins) => {
    const { root } = twins
    await start(twins, { 'was-file': 'a file', 'was-directory/inside.txt': 'inside' })
    await unlink(join(root, 'was-file'))
    await writeDatasetFile(root, 'was-file/now-inside.txt', 'below')
    await rm(join(root, 'was-directory'), { recursive: true })
    await writeDatasetFile(root, 'was-directory', 'a file now')
    const result = await twins.scan(['was-file', 'was-file/now-inside.txt', 'was-directory'])
    assert.equal(kinds(result), [
      'delete was-file',
      'delete was-directory/inside.txt',
      'delete was-directory',
      'put was-directory',
      'put was-file/now-inside.txt',
      'directory was-file',
    ])
    await twins.assertConverged()
  }),
)

test(
  'symlinks are recorded, retargeted and replaced; a scope below a link is not followed',
  withTwins(async (twins) => {
    const { root } = twins
    await start(twins, { 'box/f.txt': 'in a box', 'plain.txt': 'plain' })
    await symlink('plain.txt', join(root, 'link'))
    assert.equal(kinds(await twins.scan(['link'])), ['symlink link'])
    await unlink(join(root, 'link'))
    await symlink('box/f.txt', join(root, 'link'))
    assert.equal(kinds(await twins.scan(['link'])), ['symlink link'])
    await unlink(join(root, 'link'))
    await writeDatasetFile(root, 'link', 'a file now')
    assert.equal(kinds(await twins.scan(['link'])), ['delete link', 'put link'])

    // The box moves away and a link to it takes its name: box/f.txt is no longer in the dataset.
    await rename(join(root, 'box'), join(root, 'real-box'))
    await symlink('real-box', join(root, 'box'))
    const boxed = await twins.scoped.scan(root, { scopes: ['box/f.txt'] })
    assert.equal(kinds(boxed), ['delete box/f.txt'])
    // A scope below a file is absent too.
    assert.equal(kinds(await twins.scan(['plain.txt/below'])), [])
    await twins.scoped.scan(root, { scopes: ['box', 'real-box'] })
    await twins.assertConverged()
  }),
)

test(
  'nested and repeated scopes are merged; an empty scope or too many scopes scan everything',
  withTwins(async (twins) => {
    const { root } = twins
    await start(twins, { 'a/b/c.txt': 'c', 'a-b.txt': 'ab', 'ab.txt': 'ab' })
    for (const name of ['a/b/c.txt', 'a-b.txt', 'ab.txt'])
      await writeDatasetFile(root, name, `${name} again`, { mtimeMs: PAST_MTIME_MS + 1 })
    await pastRacyMargin()
    const merged = await twins.scan(['a/b/c.txt', 'a-b.txt', 'a', 'a/b', 'a-b.txt', 'a/b/c.txt'])
    assert.equal(merged.scopes, ['a', 'a-b.txt'])
    assert.equal(kinds(merged), ['put a-b.txt', 'put a/b/c.txt'])
    assert.is(await latestKind(twins.scoped, 'ab.txt'), 'file')
    // The hints of a directory scope's subtree are loaded with it: nothing is read again.
    assert.is((await twins.scoped.scan(root, { scopes: ['a'] })).filesRead, 0)

    const everything = await twins.scoped.scan(root, { scopes: ['a', ''] })
    assert.is(everything.scopes, null)
    assert.equal(kinds(everything), ['put ab.txt'])

    await writeDatasetFile(root, 'late.txt', 'outside every scope')
    const scopes = Array.from({ length: SCAN_SCOPES_MAX + 1 }, (_, number) => `absent-${number}`)
    const tooMany = await twins.scoped.scan(root, { scopes })
    assert.is(tooMany.scopes, null)
    assert.equal(kinds(tooMany), ['put late.txt'])
    assert.equal(kinds(await twins.scoped.scan(root, { scopes: [] })), [])
    await twins.full.scan(root)
    await twins.assertConverged()
  }),
)

test(
  'an invalid scope is BAD_ARGUMENT and records nothing',
  withTwins(async (twins) => {
    const { root, scoped } = twins
    await start(twins, { 'a.txt': 'a' })
    await writeDatasetFile(root, 'b.txt', 'b')
    const length = scoped.log.length
    for (const bad of ['..', '../outside', 'a/../b.txt', '/etc', 'a//b', 'a/', '.', 'x\0y']) {
      const error = await scoped.scan(root, { scopes: ['b.txt', bad] }).then(
        () => null,
        (failure: unknown) => failure,
      )
      assert.ok(isClusterError(error, 'BAD_ARGUMENT'), `${JSON.stringify(bad)}: ${String(error)}`)
      assert.match((error as Error).message, 'bad scan scope')
    }
    assert.is(scoped.log.length, length)
    await twins.scan(['b.txt'])
    await twins.assertConverged()
  }),
)

test(
  'a scope that vanishes mid-scan is a warning and keeps its last version until it is scanned again',
  withTwins(async (twins) => {
    const { root, scoped } = twins
    // Files are read ahead of their turn, READ_AHEAD_FILES_MAX at once: the last of these
    // is read only after the first one's append has returned.
    const earlier = Array.from(
      { length: READ_AHEAD_FILES_MAX + 1 },
      (_, index) => `first-${String(index).padStart(2, '0')}.txt`,
    )
    await start(twins, {
      ...Object.fromEntries(earlier.map((name) => [name, 'one'])),
      'second.txt': 'two',
    })
    for (const name of [...earlier, 'second.txt'])
      await writeDatasetFile(root, name, `${name}, edited`, { mtimeMs: PAST_MTIME_MS + 1 })
    // Batches of one: the first file's append returns before the last file is read.
    const result = await scoped.scan(root, {
      scopes: [...earlier, 'second.txt'],
      batchRecordsMax: 1,
      onRecorded: () => rmSync(join(root, 'second.txt'), { force: true }),
    })
    assert.equal(
      kinds(result),
      earlier.map((name) => `put ${name}`),
    )
    assert.equal(
      result.warnings.map((warning) => `${warning.code} ${warning.path}`),
      ['VANISHED second.txt'],
    )
    assert.is(await latestKind(scoped, 'second.txt'), 'file')
    assert.equal(kinds(await scoped.scan(root, { scopes: ['second.txt'] })), ['delete second.txt'])
    await twins.assertConverged()
  }),
)

test(
  'warnings, racy timestamps and parent directories in a scoped scan',
  withTwins(async (twins) => {
    const { root, scoped } = twins
    await start(twins, { 'dir/kept.txt': 'kept' })
    execFileSync('mkfifo', [join(root, 'a-fifo'), join(root, 'dir/b-fifo')])
    const warned = await twins.scan(['a-fifo', 'dir'])
    assert.equal(
      warned.warnings.map((warning) => `${warning.code} ${warning.path}`),
      ['SPECIAL_FILE a-fifo', 'SPECIAL_FILE dir/b-fifo'],
    )
    assert.equal(kinds(warned), ['directory dir'])

    // Same size, same mtime, other content: only a re-read of the racy file can tell.
    const nowSeconds = Date.now() / 1000
    await writeFile(join(root, 'hot.txt'), 'version A')
    await utimes(join(root, 'hot.txt'), nowSeconds, nowSeconds)
    await twins.scan(['hot.txt'])
    await writeFile(join(root, 'hot.txt'), 'version B')
    await utimes(join(root, 'hot.txt'), nowSeconds, nowSeconds)
    assert.equal(kinds(await twins.scan(['hot.txt'])), ['put hot.txt'])

    // A file created in a directory moves the directory's mtime; that waits for a full scan.
    await writeDatasetFile(root, 'dir/new.txt', 'new')
    assert.equal(kinds(await scoped.scan(root, { scopes: ['dir/new.txt'] })), ['put dir/new.txt'])
    assert.equal(kinds(await scoped.scan(root)), ['directory dir'])
    await twins.assertConverged()
  }),
)

test(
  'a file growing while a scoped scan reads it is FILE_UNSTABLE or one whole state',
  withTwins(async (twins) => {
    const { root, scoped } = twins
    await writeDatasetFile(root, 'growing.log', contentBytes('grow', 8 * 1024 * 1024))
    const writer = new StoreChild(['grow', join(root, 'growing.log')])
    const warnings: string[] = []
    try {
      await writer.waitForLine((line) => line.event === 'started')
      for (let round = 0; round < 4; round++) {
        const result = await scoped.scan(root, { scopes: ['growing.log'] })
        warnings.push(...result.warnings.map((warning) => warning.code))
      }
    } finally {
      await writer.kill()
    }
    for (const warning of warnings) assert.is(warning, 'FILE_UNSTABLE')
    assert.ok(warnings.length > 0, 'a read overlapped an append')
    await scoped.scan(root, { scopes: ['growing.log'] })
    await twins.assertConverged()
  }),
)

test.run()
