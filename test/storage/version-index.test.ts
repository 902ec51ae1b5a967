import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash } from 'node:crypto'
import { readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Corestore from 'corestore'
import { ClassicLevel } from 'classic-level'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import { VersionIndex, type LevelDatabase } from '../../storage/version-index.ts'
import { VersionLog } from '../../storage/version-log.ts'
import { encodeRecord } from '../../storage/version-record-codec.ts'
import {
  datasetId,
  fileVersionRecords,
  logSeq,
  type DatasetPath,
  type FileHash,
  type FileVersion,
  type RecordDraft,
} from '../../storage/version-record.ts'
import { NodeStore } from '../../storage/node-store.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { buildSampleDataset } from './fixtures/dataset-tree.ts'
import { TestClock, indexAnswers, openLogAndIndex } from './fixtures/version-store-fixture.ts'

const hashOf = (text: string): string => createHash('sha256').update(text).digest('hex')
const path = (text: string): DatasetPath => text as DatasetPath

function file(name: string, content: string, chunkCount = 1): FileVersion {
  const lengthBytes = 100
  return {
    path: path(name),
    sizeBytes: lengthBytes * chunkCount,
    mode: 0o644,
    mtimeMs: 1_600_000_000_000,
    fileHash: hashOf(content) as FileHash,
    chunks: Array.from({ length: chunkCount }, (_, index) => ({
      hash: hashOf(`${content} ${index}`) as ChunkHash,
      lengthBytes,
    })),
  }
}

const bigPatch: RecordDraft = {
  kind: 'patch',
  path: path('big'),
  sizeBytes: 500,
  mode: 0o644,
  mtimeMs: 1_600_000_000_001,
  fileHash: hashOf('big2') as FileHash,
  baseSeq: logSeq(11),
  edits: [
    { at: 2, removeCount: 1, insert: [{ hash: hashOf('big2 2') as ChunkHash, lengthBytes: 100 }] },
  ],
}

/** A history touching every record kind; returns the clock times at which each step was appended. */
async function writeHistory(log: VersionLog, clock: TestClock): Promise<number[]> {
  const steps: RecordDraft[][] = [
    fileVersionRecords(file('a', 'a1')),
    fileVersionRecords(file('dir/b', 'b1')),
    [{ kind: 'directory', path: path('dir'), mode: 0o755, mtimeMs: 5 }],
    [{ kind: 'directory', path: path('empty'), mode: 0o700, mtimeMs: 6 }],
    [{ kind: 'symlink', path: path('link'), target: '../outside' }],
    [{ kind: 'recoveryPoint', label: 'first', timeMs: clock.nowMs }],
    fileVersionRecords(file('a', 'a2')),
    [{ kind: 'rename', from: path('a'), to: path('dir/moved') }],
    [{ kind: 'delete', path: path('dir/b') }],
    fileVersionRecords(file('big', 'big', 5), 2), // two continuation records, then the put
    [{ kind: 'recoveryPoint', label: 'second', timeMs: clock.nowMs }],
    [{ kind: 'recoveryPoint', label: 'first', timeMs: clock.nowMs }], // a label used again
    [bigPatch], // a patch of the big file's put: its third chunk replaced
  ]
  const times: number[] = []
  for (const drafts of steps) {
    clock.nowMs += 1000
    times.push(clock.nowMs)
    await log.append(drafts)
  }
  return times
}

test('the index answers what each point in the history held', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const store = await openLogAndIndex(directory, { clock })
    const times = await writeHistory(store.log, clock)
    const { index } = store
    assert.is(await index.catchUp(), store.log.length)
    assert.is(store.log.length, 15)

    const tree = async (length: number): Promise<string[]> => {
      const paths: string[] = []
      for await (const entry of index.entries(length)) paths.push(`${entry.kind}:${entry.path}`)
      return paths
    }
    assert.equal(await tree(0), [])
    assert.equal(await tree(5), [
      'file:a',
      'directory:dir',
      'file:dir/b',
      'directory:empty',
      'symlink:link',
    ])
    // After the rename and the delete: 'a' lives on as 'dir/moved'.
    assert.equal(await tree(9), [
      'directory:dir',
      'file:dir/moved',
      'directory:empty',
      'symlink:link',
    ])
    // In the middle of the big file's records it does not exist yet; after its put it does.
    assert.not.ok((await tree(11)).includes('file:big'))
    assert.ok((await tree(12)).includes('file:big'))

    const moved = await index.latest(path('dir/moved'))
    assert.is(moved?.kind, 'file')
    if (moved?.kind === 'file') {
      assert.is(moved.renamedFrom, 'a')
      assert.is(moved.fileHash, hashOf('a2'))
      assert.is(moved.contentSeq, 6) // the put of a's second version
    }
    const history = await index.versionsOf(path('a'))
    assert.equal(
      history.map((entry) => entry.kind),
      ['file', 'file', 'deleted'],
    )
    assert.equal(
      history.map((entry) => entry.seq),
      [0, 6, 7],
    )
    const big = await index.latest(path('big'), 14)
    assert.equal([big?.seq, big?.kind === 'file' ? big.sizeBytes : 0], [11, 500])
    const patched = await index.latest(path('big'))
    assert.equal(
      [
        patched?.seq,
        patched?.kind === 'file' && patched.contentSeq,
        patched?.kind === 'file' && patched.fileHash,
      ],
      [14, 14, hashOf('big2')],
    )

    // Time maps to the length that includes every record appended by then.
    assert.is(await index.lengthAtTime(times[0]! - 1), 0)
    assert.is(await index.lengthAtTime(times[0]!), 1)
    assert.is(await index.lengthAtTime(times[4]! + 500), 5)
    assert.is(await index.lengthAtTime(times[9]!), 12)
    assert.is(await index.lengthAtTime(Number.MAX_SAFE_INTEGER), 15)
    // Recovery points: the latest with a label wins.
    assert.is((await index.recoveryPoint('first'))?.length, 14)
    assert.is((await index.recoveryPoint('second'))?.length, 13)
    assert.is(await index.recoveryPoint('third'), null)
    assert.equal(
      (await index.recoveryPoints()).map((point) => point.label),
      ['first', 'second', 'first'],
    )
    try {
      await index.entries(16).next()
      assert.unreachable('listed beyond the index')
    } catch (error) {
      assert.ok(isClusterError(error, 'BAD_ARGUMENT'))
    }
    await store.close()
  }))

test('record times never go backwards, even when the clock does', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const store = await openLogAndIndex(directory, { clock })
    await store.log.append([{ kind: 'delete', path: path('x') }])
    clock.nowMs -= 60_000
    await store.log.append([{ kind: 'delete', path: path('y') }])
    const [first, second] = [await store.log.read(logSeq(0)), await store.log.read(logSeq(1))]
    assert.is(second.recordedAtMs, first.recordedAtMs)
    await store.close()
    // Reopened with an even earlier clock: still not before the last record.
    clock.nowMs -= 60_000
    const reopened = await openLogAndIndex(directory, { clock })
    await reopened.log.append([{ kind: 'delete', path: path('z') }])
    assert.is((await reopened.log.read(logSeq(2))).recordedAtMs, first.recordedAtMs)
    await reopened.close()
  }))

test('on open the index catches up from its marker without a rebuild', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const first = await openLogAndIndex(directory, { clock })
    await writeHistory(first.log, clock)
    await first.index.catchUp()
    await first.close()
    // Records appended while no index was open (a replica's log grows this way too).
    const corestore = new Corestore(join(directory, 'cores'))
    const log = await VersionLog.openOwn(corestore, datasetId('dataset'))
    await log.append(fileVersionRecords(file('later', 'later')))
    await corestore.close()
    const second = await openLogAndIndex(directory, { clock })
    assert.is(second.index.rebuildReason, null)
    assert.is(second.index.indexedLength, 16)
    assert.is((await second.index.latest(path('later')))?.seq, 15)
    await second.close()
  }))

test('a damaged, lost or foreign index is rebuilt from the log with the same answers', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const store = await openLogAndIndex(directory, { clock })
    const times = await writeHistory(store.log, clock)
    await store.index.catchUp()
    const expected = await indexAnswers(store.index, times)
    await store.close()

    const rawIndex = join(directory, 'index')
    const damage: [
      string,
      (database: ClassicLevel<string, string>) => Promise<void>,
      string | null,
    ][] = [
      [
        'an entry deleted',
        async (database) => deleteOne(database, 'v:'),
        'index entries are damaged',
      ],
      [
        'an entry changed',
        async (database) =>
          changeOne(database, 'v:', (value) => value.replace('"file"', '"symlink"')),
        'index entries are damaged',
      ],
      [
        'an entry added',
        async (database) =>
          database.put('!dataset!!dataset!!index!v:ghost\u00000000000000000099', '{}'),
        'index entries are damaged',
      ],
      [
        'the marker beyond the log',
        async (database) =>
          changeOne(database, 'meta', (value) =>
            value.replace(/"indexedLength":\d+/, '"indexedLength":99'),
          ),
        'index reaches 99 but the log holds 15',
      ],
      [
        'the marker unreadable',
        async (database) => changeOne(database, 'meta', (value) => value.slice(0, 10)),
        'index marker is damaged',
      ],
      [
        'another log key',
        async (database) =>
          changeOne(database, 'meta', (value) =>
            value.replace(/"logKey":"[0-9a-f]+"/, `"logKey":"${'0'.repeat(64)}"`),
          ),
        'index belongs to another log',
      ],
      [
        'the marker gone',
        async (database) => database.del('!dataset!!dataset!!index!meta'),
        'index entries without a marker',
      ],
    ]
    for (const [what, change, reason] of damage) {
      const database = new ClassicLevel<string, string>(rawIndex)
      await database.open()
      await change(database)
      await database.close()
      const reopened = await openLogAndIndex(directory, { clock })
      assert.is(reopened.index.rebuildReason, reason, what)
      assert.equal(await indexAnswers(reopened.index, times), expected, what)
      await reopened.close()
    }
    // The whole index database removed: indexed afresh.
    await rm(rawIndex, { recursive: true })
    const fresh = await openLogAndIndex(directory, { clock })
    assert.equal(await indexAnswers(fresh.index, times), expected)
    // An explicit reindex gives the same answers too.
    await fresh.index.reindex()
    assert.is(fresh.index.rebuildReason, 'reindex requested')
    assert.equal(await indexAnswers(fresh.index, times), expected)
    await fresh.close()
  }))

test('a log that differs from what was indexed (same key, other records) forces a rebuild', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const first = await openLogAndIndex(directory, { clock })
    await first.log.append([{ kind: 'delete', path: path('one') }])
    await first.index.catchUp()
    await first.close()
    // The cores replaced by a fresh log of the same name: a new key.
    await rm(join(directory, 'cores'), { recursive: true })
    const second = await openLogAndIndex(directory, { clock })
    assert.is(second.index.rebuildReason, 'index belongs to another log')
    await second.log.append([{ kind: 'delete', path: path('two') }])
    await second.index.catchUp()
    await second.close()
    const database = new ClassicLevel<string, string>(join(directory, 'index'))
    await database.open()
    // Same key, other records (what a forked log would look like): the fingerprint differs.
    await changeOne(database, 'meta', (value) =>
      value.replace(/"fingerprint":"[0-9a-f]+"/, `"fingerprint":"${'1'.repeat(64)}"`),
    )
    await database.close()
    const third = await openLogAndIndex(directory, { clock })
    assert.is(third.index.rebuildReason, 'the log differs from what was indexed')
    assert.equal((await third.index.versionsOf(path('two'))).length, 1)
    await third.close()
  }))

test('records a peer could send that make no sense are counted and skipped, never fatal', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const store = await openLogAndIndex(directory, { clock })
    const raw = (record: object): Uint8Array =>
      encodeRecord({ recordedAtMs: 1, ...record } as never)
    await store.log.core.append([
      Buffer.from('not a record at all'),
      raw({ kind: 'rename', from: 'missing', to: 'elsewhere' }), // nothing to rename
      // A put claiming continuation records that are not there.
      raw({ ...file('claims', 'c'), kind: 'put', continuationCount: 2, chunks: [] }),
      raw({ kind: 'delete', path: 'fine' }),
      raw({ ...bigPatch, baseSeq: 3 }), // its base is a delete, not a put
      raw({ ...bigPatch, baseSeq: 5 }), // its base is itself
      raw({ ...bigPatch, baseSeq: 99 }), // its base is not in the log
      raw({ ...file('whole', 'w', 2), kind: 'put', continuationCount: 0 }),
      raw({ ...bigPatch, path: 'whole', sizeBytes: 200, baseSeq: 7 }), // edits past its base's end
      raw({
        ...bigPatch,
        path: 'whole',
        sizeBytes: 301,
        baseSeq: 7,
        edits: [
          {
            at: 1,
            removeCount: 0,
            insert: bigPatch.kind === 'patch' ? bigPatch.edits[0]!.insert : [],
          },
        ],
      }), // sizes do not add up
    ])
    await store.index.catchUp()
    assert.is(store.index.indexedLength, 10)
    assert.is(store.index.invalidRecords, 8)
    assert.equal(
      (await store.index.versionsOf(path('whole'))).map((entry) => entry.seq),
      [7],
    )
    assert.equal(
      (await store.index.versionsOf(path('fine'))).map((entry) => entry.kind),
      ['deleted'],
    )
    assert.equal(await store.index.versionsOf(path('elsewhere')), [])
    try {
      await store.log.read(logSeq(0))
      assert.unreachable('decoded garbage')
    } catch (error) {
      assert.ok(isClusterError(error, 'BAD_MESSAGE'))
    }
    await store.close()
  }))

test('pruned marks are durable and survive a rebuild', () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const store = await openLogAndIndex(directory, { clock })
    await writeHistory(store.log, clock)
    await store.index.catchUp()
    const [oldest] = await store.index.versionsOf(path('a'))
    await store.index.markPruned(oldest!)
    await store.index.reindex()
    assert.ok(await store.index.isPruned(oldest!.seq))
    assert.not.ok(await store.index.isPruned(logSeq(6)))
    assert.equal([...(await store.index.prunedSeqs())], [0])
    await store.close()
  }))

test("a replica's copy of the log, filled by replication, indexes to the same answers", () =>
  withTempDir(async (directory) => {
    const clock = new TestClock()
    const master = await openLogAndIndex(join(directory, 'master'), { clock })
    const times = await writeHistory(master.log, clock)
    await master.index.catchUp()
    const replicaStore = new Corestore(join(directory, 'replica', 'cores'))
    const replicaLog = await VersionLog.openReplica(replicaStore, master.log.core.key)
    const database = new ClassicLevel<string, string>(join(directory, 'replica', 'index'))
    await database.open()
    const masterSide = master.corestore.replicate(true)
    const replicaSide = replicaStore.replicate(false)
    masterSide.pipe(replicaSide).pipe(masterSide)
    await replicaLog.waitForLength(master.log.length)
    assert.not.ok(replicaLog.writable)
    const replicaIndex = await VersionIndex.open({
      database: database as LevelDatabase,
      datasetId: datasetId('dataset'),
      log: replicaLog,
    })
    assert.equal(await indexAnswers(replicaIndex, times), await indexAnswers(master.index, times))
    // Appends on the master arrive live.
    await master.log.append([{ kind: 'delete', path: path('live') }])
    await replicaLog.waitForLength(master.log.length, AbortSignal.timeout(10_000))
    await replicaIndex.catchUp()
    assert.is((await replicaIndex.latest(path('live')))?.kind, 'deleted')
    try {
      await replicaLog.append([{ kind: 'delete', path: path('nope') }])
      assert.unreachable('appended to a replica')
    } catch (error) {
      assert.ok(isClusterError(error, 'REFUSED'))
    }
    masterSide.destroy()
    replicaSide.destroy()
    await replicaStore.close()
    await database.close()
    await master.close()
  }))

test('an index database whose files are damaged on disk is repaired or set aside, and answers the same', () =>
  withTempDir(async (directory) => {
    const data = join(directory, 'data')
    const root = join(directory, 'set')
    await buildSampleDataset(root)
    const store = await NodeStore.open(data)
    const dataset = await store.ownDataset('dataset')
    await dataset.scan(root)
    const expected = await indexAnswers(dataset.index, [])
    await store.close()
    // Overwrite the start of every LevelDB file: the database no longer opens as it is.
    for (const name of await readdir(join(data, 'index'))) {
      if (!/\.(log|ldb)$|^MANIFEST/.test(name)) continue
      const file = join(data, 'index', name)
      const bytes = await readFile(file)
      bytes.fill(0x55, 0, Math.min(bytes.length, 4000))
      await writeFile(file, bytes)
    }
    const reopened = await NodeStore.open(data)
    try {
      const again = await reopened.ownDataset('dataset')
      assert.equal(await indexAnswers(again.index, []), expected)
    } finally {
      await reopened.close()
    }
  }))

async function deleteOne(database: ClassicLevel<string, string>, keyPrefix: string): Promise<void> {
  for await (const key of database.keys())
    if (key.includes(`!index!${keyPrefix}`)) {
      await database.del(key)
      return
    }
  assert.unreachable(`no key with ${keyPrefix}`)
}

async function changeOne(
  database: ClassicLevel<string, string>,
  keyPrefix: string,
  change: (value: string) => string,
): Promise<void> {
  for await (const [key, value] of database.iterator())
    if (key.includes(`!index!${keyPrefix}`)) {
      await database.put(key, change(value))
      return
    }
  assert.unreachable(`no key with ${keyPrefix}`)
}

test.run()
