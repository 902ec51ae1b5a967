import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'node:child_process'
import { chmod, mkdir, readdir, utimes, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import {
  RACY_MARGIN_NS,
  type ScanChange,
  type ScanWarningCode,
} from '../../storage/dataset-scanner.ts'
import type { DatasetPath } from '../../storage/version-record.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { StoreChild } from './fixtures/child-process.ts'
import {
  PAST_MTIME_MS,
  buildSampleDataset,
  changeSampleDataset,
  contentBytes,
  indexedTree,
  readAll,
  sha256,
  snapshotTree,
  writeDatasetFile,
} from './fixtures/dataset-tree.ts'

const NOBODY = 65534
const path = (text: string): DatasetPath => text as DatasetPath
const kinds = (changes: readonly ScanChange[]): string[] =>
  changes.map(
    (change) => `${change.kind} ${change.from === null ? '' : `${change.from} -> `}${change.path}`,
  )

async function withDataset(
  body: (dataset: Dataset, root: string, store: NodeStore) => Promise<void>,
): Promise<void> {
  const directory = await makeTempDir('scanner-')
  const store = await NodeStore.open(join(directory, 'data'))
  try {
    const root = join(directory, 'set')
    await mkdir(root)
    await body(await store.ownDataset('dataset'), root, store)
  } finally {
    await store.close()
    await removeDir(directory)
  }
}

async function assertIndexMatchesDisk(dataset: Dataset, root: string): Promise<void> {
  const onDisk = (await snapshotTree(root)).filter((entry) => entry.type !== 'other')
  assert.equal(await indexedTree(dataset.reader), onDisk)
}

test('a first scan records every entry; scanning an unchanged tree reads and records nothing', () =>
  withDataset(async (dataset, root) => {
    await buildSampleDataset(root)
    // Files changed (their ctime: just now) within the racy margin of a scan are read again
    // by the next one; past it, an unchanged tree is not read at all.
    await sleep(Number(RACY_MARGIN_NS / 1_000_000n) + 100)
    const first = await dataset.scan(root)
    assert.equal(first.warnings, [])
    assert.equal(
      kinds(first.changes).sort(),
      [
        'directory docs',
        'directory docs/deep',
        'directory docs/deep/nested',
        'directory empty',
        'directory empty/inner-empty',
        'directory scripts',
        'directory ünïcode',
        'put docs/deep/nested/notes.md',
        'put docs/report.bin',
        'put empty-file',
        'put readme.txt',
        'put scripts/run.sh',
        'put ünïcode/名前.txt',
        'symlink docs/link-absolute',
        'symlink link-inside',
        'symlink link-outside',
      ].sort(),
    )
    // Directories are recorded after what they hold, deepest first.
    const order = kinds(first.changes)
    assert.ok(order.indexOf('directory docs/deep/nested') < order.indexOf('directory docs/deep'))
    assert.ok(
      order.indexOf('put docs/deep/nested/notes.md') < order.indexOf('directory docs/deep/nested'),
    )
    await assertIndexMatchesDisk(dataset, root)

    const lengthBefore = dataset.log.length
    const second = await dataset.scan(root)
    assert.equal(
      [second.changes.length, second.filesRead, dataset.log.length],
      [0, 0, lengthBefore],
    )
  }))

test('changes, deletes, renames, mode changes and type changes are recorded as such', () =>
  withDataset(async (dataset, root, store) => {
    await buildSampleDataset(root)
    await dataset.scan(root)
    const chunksBefore = (await store.chunkStore.stats()).chunks

    await changeSampleDataset(root)
    const result = await dataset.scan(root)

    const changes = kinds(result.changes)
    for (const expected of [
      'put readme.txt',
      'put scripts/run.sh',
      'rename docs/report.bin -> archive/report.bin',
      'delete docs/deep/nested/notes.md',
      'delete docs/deep/nested',
      'delete docs/deep',
      'delete empty-file',
      'directory empty-file',
      'delete empty/inner-empty',
      'delete empty',
      'put empty',
      'rename ünïcode/名前.txt -> renamed-dir/名前.txt',
      'delete ünïcode',
      'directory renamed-dir',
      'directory archive',
      'delete link-inside',
      'put link-inside',
    ])
      assert.ok(changes.includes(expected), `missing '${expected}' in ${changes.join(', ')}`)
    assert.not.ok(changes.includes('put archive/report.bin'), 'a rename is not a new put')
    // Deletes of a replaced path come before what replaces it.
    assert.ok(changes.indexOf('delete empty') < changes.indexOf('put empty'))
    assert.ok(changes.indexOf('delete empty-file') < changes.indexOf('directory empty-file'))
    // The moved file's directory goes only after the rename out of it.
    assert.ok(
      changes.indexOf('rename ünïcode/名前.txt -> renamed-dir/名前.txt') <
        changes.indexOf('delete ünïcode'),
    )
    // A mode change and a rename store no new chunks; only the edited readme and the new files do.
    assert.is((await store.chunkStore.stats()).chunks - chunksBefore, 3)
    await assertIndexMatchesDisk(dataset, root)
    const moved = await dataset.reader.fileVersion(path('archive/report.bin'))
    assert.is(moved.renamedFrom, 'docs/report.bin')
    assert.is(
      sha256(await readAll(await dataset.reader.open(moved))),
      sha256(contentBytes('report', 300_000)),
    )
  }))

test('faults never stop a scan: a fifo, a socket, names that are not UTF-8, paths over the limit', () =>
  withDataset(async (dataset, root) => {
    await writeDatasetFile(root, 'ok.txt', 'fine')
    execFileSync('mkfifo', [join(root, 'a-fifo')])
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(join(root, 'a-socket'), resolve))
    // A file and a directory whose names are not UTF-8 (0xff never occurs in UTF-8).
    const badName = Buffer.concat([
      Buffer.from(`${root}/bad-`),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('.txt'),
    ])
    await writeFile(badName, 'unnamed')
    const badDirectory = Buffer.concat([Buffer.from(`${root}/dir-`), Buffer.from([0xc3, 0x28])])
    await mkdir(badDirectory)
    await writeFile(Buffer.concat([badDirectory, Buffer.from('/inside.txt')]), 'hidden')
    // Five levels of 250-byte names: the fifth passes the 1024-byte path limit.
    const segment = 'd'.repeat(250)
    await writeDatasetFile(
      root,
      `${[segment, segment, segment, segment, segment].join('/')}/deep.txt`,
      'too deep',
    )
    try {
      const result = await dataset.scan(root)
      const warnings = result.warnings.map((warning) => `${warning.code} ${warning.path}`).sort()
      assert.equal(warnings, [
        'NAME_NOT_UTF8 bad-\\xff\\xfe.txt',
        'NAME_NOT_UTF8 dir-\\xc3(',
        `PATH_TOO_LONG ${[segment, segment, segment, segment, segment].join('/')}`,
        'SPECIAL_FILE a-fifo',
        'SPECIAL_FILE a-socket',
      ])
      for (const warning of result.warnings) assert.ok(warning.message.length > warning.path.length)
      const recorded = kinds(result.changes)
      assert.ok(recorded.includes('put ok.txt'))
      assert.ok(recorded.includes(`directory ${[segment, segment, segment, segment].join('/')}`))
      assert.is(
        recorded.filter((change) => change.includes('deep.txt') || change.includes('inside'))
          .length,
        0,
      )
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  }))

test('unreadable files and directories (as an unprivileged user) are warned about, kept, and recorded once readable', async () => {
  const directory = await makeTempDir('scanner-nobody-')
  try {
    const data = join(directory, 'data')
    const root = join(directory, 'set')
    await writeDatasetFile(root, 'public.txt', 'public')
    await writeDatasetFile(root, 'secret.txt', 'secret v1')
    await writeDatasetFile(root, 'private/inside.txt', 'inside')
    await mkdir(data)
    execFileSync('chown', ['-R', `${NOBODY}:${NOBODY}`, directory])
    // Root reads anything whatever its mode, so the scans run as nobody in a child process.
    const scanAsNobody = async (): Promise<{
      warnings: { code: ScanWarningCode; path: string }[]
    }> => {
      const child = new StoreChild(['scan', data, root], { uid: NOBODY, gid: NOBODY })
      await child.finished()
      return child.lines.find((line) => line.event === 'done') as never
    }
    assert.equal((await scanAsNobody()).warnings, [])

    await writeFile(join(root, 'secret.txt'), 'secret v2')
    await chmod(join(root, 'secret.txt'), 0o000)
    await chmod(join(root, 'private'), 0o000)
    const blocked = await scanAsNobody()
    assert.equal(blocked.warnings.map((warning) => `${warning.code} ${warning.path}`).sort(), [
      'UNREADABLE private',
      'UNREADABLE secret.txt',
    ])

    await chmod(join(root, 'secret.txt'), 0o644)
    await chmod(join(root, 'private'), 0o755)
    assert.equal((await scanAsNobody()).warnings, [])

    const store = await NodeStore.open(data)
    try {
      const dataset = await store.ownDataset('dataset')
      // Nothing unreadable was taken as deleted; the new secret arrived once readable.
      for (const name of ['private/inside.txt', 'secret.txt'])
        assert.not.ok(
          (await dataset.index.versionsOf(path(name))).some((entry) => entry.kind === 'deleted'),
          name,
        )
      const secret = await dataset.reader.fileVersion(path('secret.txt'))
      assert.is((await readAll(await dataset.reader.open(secret))).toString(), 'secret v2')
      assert.is((await dataset.index.versionsOf(path('secret.txt'))).length, 2)
    } finally {
      await store.close()
    }
  } finally {
    await removeDir(directory)
  }
})

test('files appearing and vanishing during scans never stop them', () =>
  withDataset(async (dataset, root) => {
    await buildSampleDataset(root)
    const churn = new StoreChild(['churn', root])
    try {
      await churn.waitForLine((line) => line.event === 'started')
      for (let round = 0; round < 5; round++) {
        const result = await dataset.scan(root)
        for (const warning of result.warnings)
          assert.ok(
            ['VANISHED', 'FILE_UNSTABLE'].includes(warning.code),
            `${warning.code} ${warning.message}`,
          )
      }
    } finally {
      await churn.kill()
    }
    await dataset.scan(root)
    await assertIndexMatchesDisk(dataset, root)
    // Every version recorded of the churned files is a state they had: empty just after
    // writeFile truncated them, or whole; never a part of a round's line.
    for (const name of await readdir(root)) {
      if (!name.startsWith('churn-')) continue
      for (const entry of await dataset.index.versionsOf(path(name))) {
        if (entry.kind !== 'file') continue
        const content = (await readAll(await dataset.reader.open(entry))).toString()
        assert.match(content, /^(round \d+\n)?$/, JSON.stringify(content))
      }
    }
  }))

test('a lost scan state costs a re-read, not a new version', () =>
  withDataset(async (dataset, root, store) => {
    await buildSampleDataset(root)
    await dataset.scan(root)
    const length = dataset.log.length
    await store.database.sublevel(['dataset', 'dataset', 'scan']).clear()
    const result = await dataset.scan(root)
    assert.equal([result.changes.length, dataset.log.length], [0, length])
    assert.is(result.filesRead, 6)
  }))

test('a file modified just before a scan is read again next time, so a same-size edit in the same tick is not missed', () =>
  withDataset(async (dataset, root) => {
    const nowSeconds = Date.now() / 1000
    await writeFile(join(root, 'hot.txt'), 'version A')
    await utimes(join(root, 'hot.txt'), nowSeconds, nowSeconds)
    await dataset.scan(root)
    // Same size, same mtime, other content: only a re-read can tell.
    await writeFile(join(root, 'hot.txt'), 'version B')
    await utimes(join(root, 'hot.txt'), nowSeconds, nowSeconds)
    const result = await dataset.scan(root)
    assert.equal(kinds(result.changes), ['put hot.txt'])
  }))

test('a rewrite of the same size with its old mtime put back (cp -p, rsync -t) is recorded: the ctime moved', () =>
  withDataset(async (dataset, root) => {
    const file = join(root, 'kept-time.txt')
    const pastSeconds = PAST_MTIME_MS / 1000
    await writeFile(file, 'version A')
    await utimes(file, pastSeconds, pastSeconds)
    // Past the racy margin, so that only the identity can tell the rewrite.
    await sleep(Number(RACY_MARGIN_NS / 1_000_000n) + 100)
    await dataset.scan(root)
    await writeFile(file, 'version B')
    await utimes(file, pastSeconds, pastSeconds)
    const result = await dataset.scan(root)
    assert.equal(kinds(result.changes), ['put kept-time.txt'])
    const latest = await dataset.reader.fileVersion(path('kept-time.txt'))
    assert.is((await readAll(await dataset.reader.open(latest))).toString(), 'version B')
  }))

test('a recovery point marks the current state', () =>
  withDataset(async (dataset, root) => {
    await writeDatasetFile(root, 'a', 'one')
    await dataset.scan(root)
    const point = await dataset.addRecoveryPoint('nightly')
    await writeDatasetFile(root, 'a', 'two', { mtimeMs: PAST_MTIME_MS + 1 })
    await dataset.scan(root)
    const atPoint = await dataset.reader.fileVersion(path('a'), { recoveryPoint: 'nightly' })
    assert.is((await readAll(await dataset.reader.open(atPoint))).toString(), 'one')
    assert.is(point.length, 2)
  }))

test.run()
