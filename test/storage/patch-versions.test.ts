// Patch records with real files and a real store: a small change to a big file is recorded
// as a patch of a few hundred bytes against the put before it, later changes stay patches
// of the same base, a renamed file is patched against its old path's put, a big rewrite
// starts a new base; every version restores byte-exact, the mirror follows, a reindex gives
// the same answers, and prune keeps the base chunks a kept patch still needs.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdir, open, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Mirror } from '../../storage/mirror.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { retentionPolicy } from '../../storage/retention-policy.ts'
import { encodeRecord } from '../../storage/version-record-codec.ts'
import type { DatasetPath, LogSeq, VersionRecord } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { seededBytes } from './fixtures/seeded-bytes.ts'
import { TestClock } from './fixtures/version-store-fixture.ts'
import {
  DAY_MS,
  HISTORY_START_MS,
  checkIndexAgreesWithLog,
  checkVersions,
  type RecordedVersion,
} from './fixtures/version-history.ts'

const MiB = 1024 * 1024
const BIG_BYTES = 12 * MiB // about 190 chunks: big enough to be patched
const EDIT_BYTES = 4096

const path = (text: string): DatasetPath => text as DatasetPath

async function overwrite(file: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(file, 'r+')
  try {
    await handle.write(bytes, 0, bytes.length, offset)
  } finally {
    await handle.close()
  }
}

/** Scans and returns the one record the scan appended for `name`, with its seq. */
async function scanOne(
  dataset: Dataset,
  root: string,
  name: string,
): Promise<{ seq: LogSeq; record: VersionRecord; content: Buffer }> {
  const result = await dataset.scan(root)
  const changes = result.changes.filter((change) => change.path === name)
  assert.is(changes.length, 1, `one change of ${name}: ${JSON.stringify(result.changes)}`)
  const seq = changes[0]!.seq
  return { seq, record: await dataset.log.read(seq), content: await readFile(join(root, name)) }
}

interface BigFileStore {
  readonly directory: string
  readonly clock: TestClock
  readonly store: NodeStore
  readonly dataset: Dataset
  /** The dataset's directory, and the big file in it. */
  readonly root: string
  readonly file: string
}

/** A node store on the test's clock, an own dataset with an empty directory, closed after `body`. */
function withBigFileStore(body: (setup: BigFileStore) => Promise<void>): Promise<void> {
  return withTempDir(async (directory) => {
    const clock = new TestClock()
    clock.nowMs = HISTORY_START_MS
    const store = await NodeStore.open(join(directory, 'data'), { nowMs: clock.read })
    try {
      const dataset = await store.ownDataset('dataset')
      const root = join(directory, 'set')
      await mkdir(root)
      await body({ directory, clock, store, dataset, root, file: join(root, 'disk.img') })
    } finally {
      await store.close()
    }
  })
}

test('small changes to a big file are patches of one base; every version restores byte-exact', () =>
  withBigFileStore(async ({ directory, clock, store, dataset, root, file }) => {
    const recorded: RecordedVersion[] = []
    const keep = (seq: LogSeq, name: string, content: Buffer): void => {
      recorded.push({ path: path(name), seq, content })
    }

    await writeFile(file, seededBytes('disk', BIG_BYTES))
    const first = await scanOne(dataset, root, 'disk.img')
    assert.is(first.record.kind, 'put')
    keep(first.seq, 'disk.img', first.content)

    clock.nowMs += DAY_MS
    await overwrite(file, BIG_BYTES / 2, seededBytes('edit 1', EDIT_BYTES))
    const second = await scanOne(dataset, root, 'disk.img')
    assert.is(second.record.kind, 'patch')
    if (second.record.kind !== 'patch') return
    assert.is(second.record.baseSeq, first.seq)
    const putBytes = encodeRecord(first.record).length
    const patchBytes = encodeRecord(second.record).length
    assert.ok(patchBytes < 1024, `a patch of ${patchBytes} bytes (the put: ${putBytes})`)
    keep(second.seq, 'disk.img', second.content)

    // Another change elsewhere: still a patch of the first put, now with both edits.
    clock.nowMs += DAY_MS
    await overwrite(file, 1000, seededBytes('edit 2', EDIT_BYTES))
    const third = await scanOne(dataset, root, 'disk.img')
    assert.ok(third.record.kind === 'patch' && third.record.baseSeq === first.seq)
    assert.ok(third.record.kind === 'patch' && third.record.edits.length === 2)
    keep(third.seq, 'disk.img', third.content)

    // Renamed, then changed: patched against the put made under the old name.
    clock.nowMs += DAY_MS
    await rename(file, join(root, 'moved.img'))
    const moved = await scanOne(dataset, root, 'moved.img')
    assert.is(moved.record.kind, 'rename')
    clock.nowMs += DAY_MS
    await overwrite(join(root, 'moved.img'), BIG_BYTES - 5000, seededBytes('edit 3', 3000))
    const fourth = await scanOne(dataset, root, 'moved.img')
    assert.ok(fourth.record.kind === 'patch' && fourth.record.baseSeq === first.seq)
    keep(fourth.seq, 'moved.img', fourth.content)

    // Rewritten whole: a put, and the base of what comes next.
    clock.nowMs += DAY_MS
    await writeFile(join(root, 'moved.img'), seededBytes('rewritten', BIG_BYTES + 12345))
    const fifth = await scanOne(dataset, root, 'moved.img')
    assert.is(fifth.record.kind, 'put')
    keep(fifth.seq, 'moved.img', fifth.content)
    clock.nowMs += DAY_MS
    await overwrite(join(root, 'moved.img'), 77, seededBytes('edit 4', 100))
    const sixth = await scanOne(dataset, root, 'moved.img')
    assert.ok(sixth.record.kind === 'patch' && sixth.record.baseSeq === fifth.seq)
    keep(sixth.seq, 'moved.img', sixth.content)

    assert.equal([...(await checkVersions(dataset, recorded))], [], 'nothing pruned yet')
    await checkIndexAgreesWithLog(dataset)

    // A mirror built from the log holds the last version.
    const mirrorDirectory = join(directory, 'mirror')
    const mirror = await Mirror.open({
      reader: dataset.reader,
      log: dataset.log,
      directory: mirrorDirectory,
    })
    await mirror.applyTo(dataset.log.length)
    assert.ok((await readFile(join(mirrorDirectory, 'moved.img'))).equals(sixth.content))

    // Keep only the last day: every version but the current one goes, the put it is a
    // patch of among them, and the current one still restores byte-exact.
    clock.nowMs += DAY_MS / 2
    await dataset.setRetention(retentionPolicy({ keepAllWithin: '1d' }))
    await store.prune({ liveShareThreshold: 0.99 })
    const pruned = await checkVersions(dataset, recorded)
    assert.equal(
      [...pruned].sort((a, b) => a - b),
      [first.seq, second.seq, third.seq, fourth.seq, fifth.seq],
      'all but the current version pruned; the current one, a patch, restores byte-exact',
    )
  }))

test('a pruned base put still serves the kept patch of it', () =>
  withBigFileStore(async ({ clock, store, dataset, root, file }) => {
    await writeFile(file, seededBytes('disk', BIG_BYTES))
    const base = await scanOne(dataset, root, 'disk.img')
    clock.nowMs += 2 * DAY_MS
    await overwrite(file, 5 * MiB, seededBytes('edit', EDIT_BYTES))
    const patch = await scanOne(dataset, root, 'disk.img')
    assert.is(patch.record.kind, 'patch')
    clock.nowMs += DAY_MS / 2
    await dataset.setRetention(retentionPolicy({ keepAllWithin: '1d' }))
    const report = await store.prune({ liveShareThreshold: 0.99 })
    assert.is(report.versionsPruned, 1)
    // Only the chunk or two the edit replaced are dead: everything else the patch uses.
    assert.ok(report.chunksDropped <= 2, `${report.chunksDropped} chunks dropped`)
    const pruned = await checkVersions(dataset, [
      { path: path('disk.img'), seq: base.seq, content: base.content },
      { path: path('disk.img'), seq: patch.seq, content: patch.content },
    ])
    assert.equal([...pruned], [base.seq])
  }))

test.run()
