// Prune over a whole node with real files, stores and scans: retention marks what each
// policy drops, the chunk store drops what no kept version of any dataset needs, disk
// space comes back, and a pruned version reads as PRUNED while kept ones stay byte-exact.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { readFile, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import { chunkBytes } from '../../storage/chunker.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { RECORD_HEADER_BYTES } from '../../storage/pack-format.ts'
import { applyRetention } from '../../storage/retention.ts'
import { retentionPolicy } from '../../storage/retention-policy.ts'
import type { DatasetPath, LogSeq } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { TestClock } from './fixtures/version-store-fixture.ts'
import {
  DAY_MS,
  HISTORY_START_MS,
  HOUR_MS,
  checkIndexAgreesWithLog,
  checkVersions,
  recordFiles,
  recordedVersions,
  versionContent,
  writeVersionFiles,
  type RecordedVersion,
} from './fixtures/version-history.ts'

const THRESHOLD = { liveShareThreshold: 0.9 } as const
/** Keeps only what the last day recorded (and current versions). */
const LAST_DAY_ONLY = retentionPolicy({ keepAllWithin: '1d' })

const path = (text: string): DatasetPath => text as DatasetPath
const sorted = (seqs: Iterable<LogSeq>): number[] => [...seqs].sort((a, b) => a - b)

async function directoryBytes(directory: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true }))
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  return total
}

async function assertRejects(promise: Promise<unknown>, code: string, pattern: RegExp) {
  const error = await promise.then(
    () => null,
    (failure: unknown) => failure,
  )
  assert.ok(isClusterError(error) && error.code === code, `${code}: ${String(error)}`)
  assert.match(error.message, pattern)
}

function chunkHashesOf(contents: readonly Buffer[]): Set<ChunkHash> {
  return new Set(contents.flatMap((content) => chunkBytes(content).map((chunk) => chunk.hash)))
}

function startClock(): TestClock {
  const clock = new TestClock()
  clock.nowMs = HISTORY_START_MS
  return clock
}

/** Runs `body` with the node store in `directory`/data, on the test's clock, and closes it. */
async function withStore<T>(
  directory: string,
  clock: TestClock,
  body: (store: NodeStore) => Promise<T>,
): Promise<T> {
  const store = await NodeStore.open(join(directory, 'data'), { nowMs: clock.read })
  try {
    return await body(store)
  } finally {
    await store.close()
  }
}

test('prune applies retention: dropped versions read PRUNED, kept ones restore byte-exact, disk space comes back', () =>
  withTempDir(async (directory) => {
    const clock = startClock()
    const root = join(directory, 'set')
    const recorded: RecordedVersion[] = []
    const expectedPruned = await withStore(directory, clock, async (store) => {
      const dataset = await store.ownDataset('dataset')
      for (let day = 0; day < 10; day++) {
        clock.nowMs = HISTORY_START_MS + day * DAY_MS
        const files = new Map([['big.bin', versionContent('big.bin', day, 600_000)]])
        if (day === 0) files.set('notes/small.txt', Buffer.from('small\n'))
        recorded.push(...(await recordFiles(dataset, root, files)))
        if (day === 3) await dataset.addRecoveryPoint('day 3')
      }
      const big = recorded.filter((version) => version.path === 'big.bin')
      clock.nowMs += HOUR_MS
      // The window keeps days 8 and 9, the daily rule days 7 and 6, the recovery point day 3.
      await dataset.setRetention(retentionPolicy({ keepAllWithin: '2d', keepDaily: 2 }))
      const droppedDays = [0, 1, 2, 4, 5]
      const droppedChunks = chunkHashesOf(droppedDays.map((day) => big[day]!.content))
      let droppedBytes = 0
      for (const day of droppedDays)
        for (const chunk of chunkBytes(big[day]!.content))
          droppedBytes += RECORD_HEADER_BYTES + chunk.bytes.length
      const diskBefore = await directoryBytes(join(directory, 'data', 'chunks'))
      const statsBefore = await store.chunkStore.stats()

      const report = await store.prune(THRESHOLD)
      assert.is(report.versionsPruned, droppedDays.length)
      assert.equal(report.datasets, [
        { id: 'dataset', retention: { versionsPruned: 5, versionsKept: 6, pathsSkipped: [] } },
      ])
      assert.is(report.chunksDropped, droppedChunks.size)
      assert.is(report.bytesFreed, droppedBytes)
      assert.is(report.packsRewritten, 1)
      for (const hash of droppedChunks) assert.not.ok(await store.chunkStore.has(hash))
      assert.is((await store.chunkStore.stats()).packBytes, statsBefore.packBytes - droppedBytes)
      const diskAfter = await directoryBytes(join(directory, 'data', 'chunks'))
      assert.ok(diskAfter < diskBefore - droppedBytes * 0.9, `${diskBefore} -> ${diskAfter}`)

      const expectedPruned = sorted(droppedDays.map((day) => big[day]!.seq))
      assert.equal(sorted(await checkVersions(dataset, recorded)), expectedPruned)
      assert.equal(
        (await dataset.reader.versions(path('big.bin'))).map((version) => version.pruned),
        big.map((_, day) => droppedDays.includes(day)),
      )
      const restored = join(directory, 'restored')
      await dataset.restore({
        point: { recoveryPoint: 'day 3' },
        path: 'big.bin',
        destination: restored,
      })
      assert.ok((await readFile(join(restored, 'big.bin'))).equals(big[3]!.content))
      await assertRejects(
        dataset.restore({
          point: { length: big[1]!.seq + 1 },
          path: 'big.bin',
          destination: restored,
        }),
        'PRUNED',
        /version \d+ of big.bin was pruned/,
      )

      const again = await store.prune(THRESHOLD)
      assert.equal(
        [again.versionsPruned, again.chunksDropped, again.bytesFreed, again.packsRewritten],
        [0, 0, 0, 0],
      )
      await checkIndexAgreesWithLog(dataset)
      assert.equal(sorted(await checkVersions(dataset, recorded)), expectedPruned)
      return expectedPruned
    })
    await withStore(directory, clock, async (store) => {
      const dataset = await store.ownDataset('dataset')
      assert.equal(sorted(await checkVersions(dataset, recorded)), expectedPruned, 'after a reopen')
    })
  }))

test('a chunk shared by two datasets stays while either needs it', () =>
  withTempDir(async (directory) => {
    const clock = startClock()
    await withStore(directory, clock, async (store) => {
      const shared = versionContent('shared', 0, 400_000)
      const sharedChunks = chunkHashesOf([shared])
      const record = async (dataset: Dataset, content: Buffer): Promise<RecordedVersion[]> =>
        recordFiles(dataset, join(directory, dataset.id), new Map([['shared.bin', content]]))
      const a = await store.ownDataset('a')
      const b = await store.ownDataset('b')
      const recordedA = await record(a, shared)
      const recordedB = await record(b, shared)
      /** Ten days on, `dataset` gets other content and keeps only its last day. */
      const moveOn = async (dataset: Dataset, recorded: RecordedVersion[]): Promise<void> => {
        clock.nowMs += 10 * DAY_MS
        recorded.push(...(await record(dataset, versionContent(dataset.id, 1, 1000))))
        await dataset.setRetention(LAST_DAY_ONLY)
      }

      await moveOn(a, recordedA)
      assert.is((await store.prune(THRESHOLD)).versionsPruned, 1)
      assert.equal(sorted(await checkVersions(a, recordedA)), [recordedA[0]!.seq])
      assert.equal(sorted(await checkVersions(b, recordedB)), [])
      for (const hash of sharedChunks) assert.ok(await store.chunkStore.has(hash))

      await moveOn(b, recordedB)
      const report = await store.prune(THRESHOLD)
      assert.is(report.versionsPruned, 1)
      assert.is(report.chunksDropped, sharedChunks.size)
      for (const hash of sharedChunks) assert.not.ok(await store.chunkStore.has(hash))
      assert.equal(sorted(await checkVersions(b, recordedB)), [recordedB[0]!.seq])
      assert.equal(sorted(await checkVersions(a, recordedA)), [recordedA[0]!.seq])
    })
  }))

test('datasets not opened since the node started still count: own ones and replicas', () =>
  withTempDir(async (directory) => {
    const clock = startClock()
    const content = versionContent('everywhere', 0, 500_000)
    const master = await NodeStore.open(join(directory, 'master'), { nowMs: clock.read })
    const masterLog = await withStore(directory, clock, async (node) => {
      try {
        const own = await master.ownDataset('m')
        const versions = await recordFiles(own, join(directory, 'm'), new Map([['f.bin', content]]))
        // The replica gets the log by replication and the chunks from the master's store.
        const masterSide = master.corestore.replicate(true)
        const replicaSide = node.corestore.replicate(false)
        masterSide.pipe(replicaSide).pipe(masterSide)
        const replica = await node.replicaDataset('m', own.log.core.key)
        await replica.log.waitForLength(own.log.length, AbortSignal.timeout(20_000))
        for await (const hash of master.referencedChunks())
          await node.chunkStore.put(hash, await master.chunkStore.get(hash))
        await node.chunkStore.flush()
        await replica.markComplete(replica.log.length)
        masterSide.destroy()
        replicaSide.destroy()
        return { key: own.log.core.key, versions }
      } finally {
        await master.close()
      }
    })
    const kept = await withStore(directory, clock, async (node) => {
      const pruning = await node.ownDataset('pruning')
      await recordFiles(pruning, join(directory, 'pruning'), new Map([['old.bin', content]]))
      await pruning.setRetention(LAST_DAY_ONLY)
      const other = await node.ownDataset('other')
      return recordFiles(other, join(directory, 'other'), new Map([['copy.bin', content]]))
    })

    // After a restart only 'pruning' is opened; its old version goes, the content stays.
    clock.nowMs += 10 * DAY_MS
    await withStore(directory, clock, async (node) => {
      const pruning = await node.ownDataset('pruning')
      await recordFiles(
        pruning,
        join(directory, 'pruning'),
        new Map([['old.bin', Buffer.from('x')]]),
      )
      const report = await node.prune(THRESHOLD)
      assert.is(report.versionsPruned, 1)
      assert.equal(report.datasets.map((each) => each.id).sort(), ['m', 'other', 'pruning'])
      for (const hash of chunkHashesOf([content])) assert.ok(await node.chunkStore.has(hash))
      assert.equal(sorted(await checkVersions(await node.ownDataset('other'), kept)), [])
      const replica = await node.replicaDataset('m', masterLog.key)
      assert.equal(sorted(await checkVersions(replica, masterLog.versions)), [])
    })
  }))

test('a scan running alongside prune never loses a chunk, even one prune had found dead', () =>
  withTempDir(async (directory) => {
    const clock = startClock()
    const root = join(directory, 'set')
    await withStore(directory, clock, async (store) => {
      const dataset = await store.ownDataset('dataset')
      await dataset.setRetention(LAST_DAY_ONLY)
      const names = Array.from({ length: 24 }, (_, index) => `f${index}.bin`)
      const filesOf = (version: number): Map<string, Buffer> =>
        new Map(names.map((name) => [name, versionContent(name, version, 150_000)]))
      const recorded = [
        ...(await recordFiles(dataset, root, filesOf(0))),
        ...(await recordFiles(dataset, root, filesOf(1))),
      ]
      for (let round = 0; round < 6; round++) {
        // The files go back to content whose older versions this prune drops: the scan finds
        // those chunks stored, and a prune that did not wait for it would drop them.
        clock.nowMs += 10 * DAY_MS
        const files = filesOf(round % 2)
        await writeVersionFiles(root, files)
        // Either may start first, the other a few milliseconds later.
        const delayMs = (round * 7) % 20
        const [scan] = await Promise.all([
          sleep(round % 2 === 0 ? 0 : delayMs).then(() =>
            dataset.scan(root, { batchRecordsMax: 2 }),
          ),
          sleep(round % 2 === 0 ? delayMs : 0).then(() => store.prune(THRESHOLD)),
        ])
        const versions = recordedVersions(scan, files)
        assert.is(versions.length, names.length)
        recorded.push(...versions)
        await checkVersions(dataset, recorded)
      }
      await store.prune(THRESHOLD)
      const pruned = await checkVersions(dataset, recorded)
      assert.is(pruned.size, recorded.length - names.length, 'all but the current versions went')
    })
  }))

test('nonsense options and a damaged registry are refused before anything is marked', () =>
  withTempDir(async (directory) => {
    const clock = startClock()
    const root = join(directory, 'set')
    await withStore(directory, clock, async (store) => {
      const dataset = await store.ownDataset('dataset')
      const recorded = await recordFiles(dataset, root, new Map([['a.bin', Buffer.from('one')]]))
      clock.nowMs += 10 * DAY_MS
      recorded.push(...(await recordFiles(dataset, root, new Map([['a.bin', Buffer.from('two')]]))))
      await dataset.setRetention(LAST_DAY_ONLY)
      for (const liveShareThreshold of [-0.1, 1.5, Number.NaN])
        await assertRejects(
          store.prune({ liveShareThreshold }),
          'BAD_ARGUMENT',
          /liveShareThreshold/,
        )
      assert.equal(sorted(await dataset.index.prunedSeqs()), [])

      await dataset.setRetention(null)
      assert.is((await store.prune(THRESHOLD)).versionsPruned, 0, 'no policy: every version kept')
      await dataset.setRetention(LAST_DAY_ONLY)
      assert.equal(await dataset.retention(), LAST_DAY_ONLY)
    })
    await writeFile(join(directory, 'data', 'datasets.json'), '{"datasets": [{"id": "dataset"')
    await withStore(directory, clock, async (reopened) => {
      const dataset = await reopened.ownDataset('dataset')
      await assertRejects(
        reopened.prune(THRESHOLD),
        'CORRUPT_STORE',
        /dataset registry .* is damaged/,
      )
      assert.equal(sorted(await dataset.index.prunedSeqs()), [])
    })
  }))

test('a path with more versions than retention holds in memory is left whole and reported', () =>
  withTempDir(async (directory) => {
    const clock = startClock()
    const root = join(directory, 'set')
    await withStore(directory, clock, async (store) => {
      const dataset = await store.ownDataset('dataset')
      const recorded: RecordedVersion[] = []
      for (let version = 0; version < 4; version++) {
        const files = new Map([['many.bin', versionContent('many', version, 100)]])
        if (version < 2) files.set('few.bin', versionContent('few', version, 100))
        recorded.push(...(await recordFiles(dataset, root, files)))
        clock.nowMs += DAY_MS
      }
      const report = await applyRetention(dataset.index, LAST_DAY_ONLY, clock.nowMs, 3)
      assert.equal(report, { versionsPruned: 1, versionsKept: 1, pathsSkipped: ['many.bin'] })
      const few = recorded.filter((version) => version.path === 'few.bin')
      assert.equal(sorted(await checkVersions(dataset, recorded)), [few[0]!.seq])
    })
  }))

test.run()
