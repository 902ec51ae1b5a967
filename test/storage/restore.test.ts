import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isClusterError, type ClusterErrorCode } from '../../consensus/cluster-error.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { TEMP_FILE_PREFIX } from '../../storage/restore.ts'
import type { DatasetPath } from '../../storage/version-record.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import {
  PAST_MTIME_MS,
  buildSampleDataset,
  readAll,
  settleDirectories,
  sha256,
  snapshotTree,
  writeDatasetFile,
  type TreeEntry,
} from './fixtures/dataset-tree.ts'
import { TestClock } from './fixtures/version-store-fixture.ts'

const path = (text: string): DatasetPath => text as DatasetPath
const OUTSIDE_LINKS = ['link-outside', 'docs/link-absolute']

interface History {
  readonly dataset: Dataset
  readonly store: NodeStore
  readonly directory: string
  readonly root: string
  /** The dataset as it was after each scan, the log length and the clock then. */
  readonly states: { tree: TreeEntry[]; length: number; timeMs: number }[]
}

/** A dataset scanned twice: the sample, then a round of edits, renames and deletes. */
async function withHistory(body: (history: History) => Promise<void>): Promise<void> {
  const directory = await makeTempDir('restore-')
  const clock = new TestClock()
  const store = await NodeStore.open(join(directory, 'data'), { nowMs: clock.read })
  try {
    const root = join(directory, 'set')
    const dataset = await store.ownDataset('dataset')
    const states: History['states'] = []
    const record = async (): Promise<void> => {
      await dataset.scan(root)
      states.push({
        tree: await snapshotTree(root),
        length: dataset.log.length,
        timeMs: clock.nowMs,
      })
      clock.nowMs += 60_000
    }
    await buildSampleDataset(root)
    await record()
    await dataset.addRecoveryPoint('after first scan')
    await writeDatasetFile(root, 'readme.txt', 'hello, second version\n', {
      mode: 0o600,
      mtimeMs: PAST_MTIME_MS + 7,
    })
    await rename(join(root, 'docs/report.bin'), join(root, 'report-moved.bin'))
    await rm(join(root, 'scripts'), { recursive: true })
    await mkdir(join(root, 'new-empty'))
    await settleDirectories(root, PAST_MTIME_MS + 99)
    await record()
    await body({ dataset, store, directory, root, states })
  } finally {
    await store.close()
    await removeDir(directory)
  }
}

async function expectCode(work: Promise<unknown>, code: ClusterErrorCode): Promise<void> {
  try {
    await work
  } catch (error) {
    assert.ok(isClusterError(error, code), `expected ${code}, got ${String(error)}`)
    return
  }
  assert.unreachable(`expected ${code}`)
}

const withoutOutsideLinks = (tree: TreeEntry[]): TreeEntry[] =>
  tree.filter((entry) => !OUTSIDE_LINKS.includes(entry.path))

test('a whole tree restored at a length, a time or a recovery point equals the dataset as it was', () =>
  withHistory(async ({ dataset, directory, states }) => {
    const [first, second] = states
    const points = [
      { point: { length: first!.length }, expected: first! },
      { point: { timeMs: first!.timeMs + 30_000 }, expected: first! },
      { point: { recoveryPoint: 'after first scan' }, expected: first! },
      { point: { length: second!.length }, expected: second! },
      { point: { timeMs: Date.now() * 2 }, expected: second! },
    ]
    for (const [number, { point, expected }] of points.entries()) {
      const destination = join(directory, `restored-${number}`)
      const result = await dataset.restore({ point, destination })
      // Links that lead outside the destination are refused, and said so.
      assert.equal(result.skipped.map((skip) => `${skip.code} ${skip.path}`).sort(), [
        'UNSAFE_PATH docs/link-absolute',
        'UNSAFE_PATH link-outside',
      ])
      assert.equal(
        await snapshotTree(destination),
        withoutOutsideLinks(expected.tree),
        JSON.stringify(point),
      )
    }
  }))

test('one file restored at an older version is byte-exact, with its mode and mtime', () =>
  withHistory(async ({ dataset, directory, states }) => {
    const destination = join(directory, 'one')
    const result = await dataset.restore({
      point: { length: states[0]!.length },
      path: 'readme.txt',
      destination,
    })
    assert.equal([result.files, result.directories, result.symlinks], [1, 0, 0])
    const restored = join(destination, 'readme.txt')
    assert.is(await readFile(restored, 'utf8'), 'hello\n')
    const stats = await stat(restored)
    assert.is(stats.mode & 0o7777, 0o644)
    assert.is(Math.round(stats.mtimeMs), PAST_MTIME_MS)
    assert.equal(await readdir(destination), ['readme.txt']) // no temporary file left
    // A subtree, at the later point: the moved file is gone from docs/.
    const subtree = join(directory, 'subtree')
    await dataset.restore({
      point: { length: states[1]!.length },
      path: 'docs',
      destination: subtree,
    })
    assert.equal(
      (await snapshotTree(subtree)).map((entry) => entry.path),
      ['docs', 'docs/deep', 'docs/deep/nested', 'docs/deep/nested/notes.md'],
    )
  }))

test('restoring a file over an existing one replaces it whole', () =>
  withHistory(async ({ dataset, directory }) => {
    const destination = join(directory, 'over')
    await writeDatasetFile(
      destination,
      'readme.txt',
      'an older local copy that is longer than the version',
    )
    await dataset.restore({
      point: { length: dataset.index.indexedLength },
      path: 'readme.txt',
      destination,
    })
    assert.is(await readFile(join(destination, 'readme.txt'), 'utf8'), 'hello, second version\n')
  }))

test('a directory in the way of a file or a link is left as it is, and the entry is refused', () =>
  withHistory(async ({ dataset, directory }) => {
    const destination = join(directory, 'in-the-way')
    await writeDatasetFile(destination, 'readme.txt/kept.txt', 'mine')
    await writeDatasetFile(destination, 'link-inside/kept.txt', 'mine too')
    const result = await dataset.restore({
      point: { length: dataset.index.indexedLength },
      destination,
    })
    const refused = result.skipped.filter((skip) => skip.code === 'REFUSED')
    assert.equal(refused.map((skip) => skip.path).sort(), ['link-inside', 'readme.txt'])
    for (const skip of refused) assert.match(skip.message, 'a directory is in the way')
    assert.is(await readFile(join(destination, 'readme.txt/kept.txt'), 'utf8'), 'mine')
    assert.is(await readFile(join(destination, 'link-inside/kept.txt'), 'utf8'), 'mine too')
    assert.is(
      result.files,
      (await snapshotTree(join(directory, 'set'))).filter((entry) => entry.type === 'file').length -
        1,
    )
    const leftovers = (await snapshotTree(destination)).filter((entry) =>
      entry.path.includes(TEMP_FILE_PREFIX),
    )
    assert.equal(leftovers, [], 'no temporary file is left')
    // Alone, the entry is an error.
    try {
      await dataset.restore({
        point: { length: dataset.index.indexedLength },
        path: 'readme.txt',
        destination,
      })
      assert.unreachable('a directory in the way of the one file asked for is an error')
    } catch (error) {
      assert.ok(isClusterError(error, 'REFUSED'), String(error))
    }
  }))

test('symlinks are restored only when they resolve inside the destination, even through other links', () =>
  withHistory(async ({ dataset, directory, root }) => {
    await symlink('.', join(root, 'here')) // inside: the dataset's own top
    await symlink('here/../escaped', join(root, 'sneaky')) // by name inside, by the kernel outside
    await symlink('docs/deep/nested/notes.md', join(root, 'docs-link'))
    await dataset.scan(root)
    const destination = join(directory, 'links')
    const result = await dataset.restore({
      point: { length: dataset.index.indexedLength },
      destination,
    })
    assert.equal(result.skipped.map((skip) => `${skip.code} ${skip.path}`).sort(), [
      'UNSAFE_PATH docs/link-absolute',
      'UNSAFE_PATH link-outside',
      'UNSAFE_PATH sneaky',
    ])
    const tree = await snapshotTree(destination)
    assert.ok(tree.some((entry) => entry.path === 'here' && entry.content === '.'))
    assert.ok(
      tree.some(
        (entry) => entry.path === 'docs-link' && entry.content === 'docs/deep/nested/notes.md',
      ),
    )
    assert.not.ok(tree.some((entry) => entry.path === 'sneaky'))
    // Asked for alone, an unsafe link is an error.
    await expectCode(
      dataset.restore({
        point: { length: dataset.index.indexedLength },
        path: 'link-outside',
        destination: join(directory, 'single'),
      }),
      'UNSAFE_PATH',
    )
  }))

test('requested paths with .. or absolute paths are refused before anything is written', () =>
  withHistory(async ({ dataset, directory }) => {
    for (const bad of ['../outside', 'docs/../../x', '/etc/passwd', 'docs//x'])
      await expectCode(
        dataset.restore({ point: { length: 1 }, path: bad, destination: join(directory, 'never') }),
        'UNSAFE_PATH',
      )
    assert.not.ok(
      await stat(join(directory, 'never')).then(
        () => true,
        () => false,
      ),
    )
  }))

test('an existing link in the destination leading outside is refused; one leading inside is followed', () =>
  withHistory(async ({ dataset, directory }) => {
    const outside = join(directory, 'outside')
    await mkdir(outside)
    const destination = join(directory, 'dest')
    await mkdir(destination)
    await symlink(outside, join(destination, 'docs'))
    const length = dataset.index.indexedLength
    await expectCode(
      dataset.restore({ point: { length }, path: 'docs/deep/nested/notes.md', destination }),
      'UNSAFE_PATH',
    )
    assert.equal(await readdir(outside), [])
    // A tree restore skips what lies behind the link and restores the rest.
    const result = await dataset.restore({ point: { length }, destination })
    assert.ok(
      result.skipped.some(
        (skip) => skip.path === 'docs/deep/nested/notes.md' && skip.code === 'UNSAFE_PATH',
      ),
    )
    assert.equal(await readdir(outside), [])
    assert.is(await readFile(join(destination, 'readme.txt'), 'utf8'), 'hello, second version\n')

    const inside = join(directory, 'dest-inside')
    await mkdir(join(inside, 'real-docs'), { recursive: true })
    await symlink('real-docs', join(inside, 'docs'))
    await dataset.restore({
      point: { length },
      path: 'docs/deep/nested/notes.md',
      destination: inside,
    })
    assert.is(await readFile(join(inside, 'real-docs/deep/nested/notes.md'), 'utf8'), '# notes\n')
  }))

test('a pruned version is reported PRUNED, not as damage', () =>
  withHistory(async ({ dataset, directory, states }) => {
    const [oldest] = await dataset.index.versionsOf(path('readme.txt'))
    await dataset.index.markPruned(oldest!)
    const versions = await dataset.reader.versions(path('readme.txt'))
    assert.equal(
      versions.map((version) => version.pruned),
      [true, false],
    )
    const point = { length: states[0]!.length }
    await expectCode(
      dataset.restore({ point, path: 'readme.txt', destination: join(directory, 'p1') }),
      'PRUNED',
    )
    const result = await dataset.restore({ point, destination: join(directory, 'p2') })
    assert.ok(result.skipped.some((skip) => skip.path === 'readme.txt' && skip.code === 'PRUNED'))
    await expectCode(dataset.reader.open(oldest as never), 'PRUNED')
  }))

test('a damaged chunk store fails the files it cannot prove, and leaves no half-written file', () =>
  withHistory(async ({ store, directory }) => {
    const data = store.directory
    await store.close()
    // Damage every stored chunk byte range we can find: flip bytes throughout the pack files.
    for (const file of await listFiles(join(data, 'chunks'))) {
      const bytes = await readFile(file)
      if (bytes.length < 64) continue
      for (let offset = 32; offset < bytes.length; offset += 997)
        bytes[offset] = bytes[offset]! ^ 0x5a
      await writeFile(file, bytes)
    }
    const reopened = await NodeStore.open(data)
    try {
      const dataset = await reopened.ownDataset('dataset')
      const destination = join(directory, 'damaged')
      const result = await dataset.restore({
        point: { length: dataset.index.indexedLength },
        destination,
      })
      const failed = result.skipped.filter((skip) => !OUTSIDE_LINKS.includes(skip.path))
      assert.ok(failed.length > 0, 'some files could not be proven')
      for (const skip of failed)
        assert.ok(['HASH_MISMATCH', 'CORRUPT_STORE', 'NOT_FOUND'].includes(skip.code), skip.message)
      // Whatever was written is whole and right; nothing temporary remains.
      for (const entry of await snapshotTree(destination)) {
        assert.not.ok(entry.path.includes(TEMP_FILE_PREFIX), entry.path)
        if (entry.type !== 'file') continue
        const version = await dataset.reader.fileVersion(path(entry.path))
        assert.is(entry.content, version.fileHash, entry.path)
      }
    } finally {
      await reopened.close()
    }
  }))

test('the reader lists versions and the difference between two points', () =>
  withHistory(async ({ dataset, states }) => {
    const versions = await dataset.reader.versions(path('readme.txt'))
    assert.equal(
      versions.map((version) => [version.kind, version.kind === 'file' ? version.sizeBytes : 0]),
      [
        ['file', 6],
        ['file', 22],
      ],
    )
    assert.ok(versions[1]!.recordedAtMs > versions[0]!.recordedAtMs)
    const diff = await dataset.reader.diff(
      { length: states[0]!.length },
      { length: states[1]!.length },
    )
    const names = (entries: readonly { path: string }[]): string[] =>
      entries.map((entry) => entry.path).sort()
    assert.equal(names(diff.added), ['new-empty', 'report-moved.bin'])
    assert.equal(names(diff.deleted), ['docs/report.bin', 'scripts', 'scripts/run.sh'])
    assert.ok(names(diff.changed.map((change) => change.after)).includes('readme.txt'))
    const readme = diff.changed.find((change) => change.after.path === 'readme.txt')!
    assert.is(readme.before.kind === 'file' && readme.before.fileHash, sha256('hello\n'))
    const moved = await dataset.reader.fileVersion(path('report-moved.bin'))
    assert.is((await readAll(await dataset.reader.open(moved))).length, 300_000)
  }))

test('the chunks that kept versions need can be enumerated; pruned versions drop out', () =>
  withHistory(async ({ dataset, store }) => {
    const referenced = async (): Promise<Set<string>> => {
      const hashes = new Set<string>()
      for await (const hash of store.referencedChunks()) hashes.add(hash)
      return hashes
    }
    const firstReadme = sha256('hello\n') // a small file is one chunk: its hash is the file's
    const report = await dataset.reader.chunkList(
      await dataset.reader.fileVersion(path('report-moved.bin')),
    )
    assert.ok((await referenced()).has(firstReadme))
    const [oldReadme] = await dataset.index.versionsOf(path('readme.txt'))
    await dataset.index.markPruned(oldReadme!)
    // The moved report's first version is pruned, but its rename still needs the same chunks.
    const [originalReport] = await dataset.index.versionsOf(path('docs/report.bin'))
    await dataset.index.markPruned(originalReport!)
    const after = await referenced()
    assert.not.ok(after.has(firstReadme))
    assert.ok(after.has(sha256('hello, second version\n')))
    for (const chunk of report) assert.ok(after.has(chunk.hash))
  }))

async function listFiles(directory: string): Promise<string[]> {
  const files: string[] = []
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    const absolute = join(directory, entry.name)
    if (entry.isDirectory()) files.push(...(await listFiles(absolute)))
    else files.push(absolute)
  }
  return files
}

test.run()
