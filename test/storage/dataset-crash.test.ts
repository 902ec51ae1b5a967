// Real processes killed with SIGKILL in the middle of a scan, a mirror and a restore.
// Afterwards every version the killed process reported as recorded must be there,
// byte-exact; the index must agree with the log; and no half-written file may show up
// in a mirror or a restore (a crash's temporary files are ignored, then cleaned).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { isTemporaryName } from '../../storage/restore.ts'
import type { DatasetPath, LogSeq } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { StoreChild } from './fixtures/child-process.ts'
import {
  PAST_MTIME_MS,
  contentBytes,
  readAll,
  settleDirectories,
  sha256,
  snapshotTree,
  writeDatasetFile,
} from './fixtures/dataset-tree.ts'
import { indexAnswers } from './fixtures/version-store-fixture.ts'

const path = (text: string): DatasetPath => text as DatasetPath
/** Kills per scenario: each at another moment of the work. */
const KILLS = 3
/** Small batches, so that a kill lands between durable batches as well as inside one. */
const BATCH_RECORDS = '12'

/** Small and large files in nested directories; sizes vary so kills land mid-file too. */
async function buildLargeDataset(root: string, fileCount: number, seed: string): Promise<void> {
  for (let number = 0; number < fileCount; number++) {
    const sizeBytes = number % 25 === 0 ? 1_000_000 : 1000 + ((number * 7919) % 20_000)
    await writeDatasetFile(
      root,
      `d${number % 7}/e${number % 3}/${seed}-${number}.bin`,
      contentBytes(`${seed}${number}`, sizeBytes),
      {
        mtimeMs: PAST_MTIME_MS + number,
      },
    )
  }
  await settleDirectories(root)
}

async function openDataset<T>(data: string, work: (dataset: Dataset) => Promise<T>): Promise<T> {
  const store = await NodeStore.open(data)
  try {
    return await work(await store.ownDataset('dataset'))
  } finally {
    await store.close()
  }
}

/**
 * Starts a child and kills it a moment after it printed `event`: a moment that differs
 * per round. A child that finished first is a valid outcome too.
 */
async function runAndKill(args: string[], round: number, event: string): Promise<StoreChild> {
  const child = new StoreChild(args)
  try {
    await child.waitForLine((line) => line.event === event)
    await sleep(5 + ((round * 97) % 120))
  } catch {
    // It ended before printing the line; its lines are still there to check.
  }
  await child.kill()
  return child
}

/** 1 when the kill came before the child finished its work. */
function wasInterrupted(child: StoreChild): number {
  return child.lines.some((line) => line.event === 'done') ? 0 : 1
}

test('kill -9 during scans: every version reported as recorded is there, byte-exact; the index agrees with the log', () =>
  withTempDir(async (directory) => {
    const data = join(directory, 'data')
    const root = join(directory, 'set')
    await buildLargeDataset(root, 200, 'a')
    const reported: { kind: string; path: string; seq: number; fileHash: string | null }[] = []
    let interrupted = 0
    for (let round = 0; round < KILLS; round++) {
      if (round === 2) await buildLargeDataset(root, 60, 'b') // more work after some kills
      // Killed early in one round, after a first batch was recorded in the next.
      const event = round % 2 === 0 ? 'started' : 'recorded'
      const child = await runAndKill(['scan', data, root, BATCH_RECORDS], round, event)
      interrupted += wasInterrupted(child)
      reported.push(...(child.lines.filter((line) => line.event === 'recorded') as never[]))
      await openDataset(data, async (dataset) => {
        for (const change of reported) {
          const entry = (await dataset.index.versionsOf(path(change.path))).find(
            (each) => each.seq === change.seq,
          )
          assert.ok(
            entry !== undefined,
            `reported ${change.kind} of ${change.path} at ${change.seq} is in the index`,
          )
          if (change.kind !== 'put') continue
          assert.is(entry.kind === 'file' && entry.fileHash, change.fileHash)
          const bytes = await readAll(
            await dataset.reader.open(
              await dataset.reader.fileVersion(path(change.path), { seq: change.seq as LogSeq }),
            ),
          )
          assert.is(sha256(bytes), change.fileHash)
          assert.ok(
            bytes.equals(await readFile(join(root, change.path))),
            `${change.path} byte-exact`,
          )
        }
        const answers = await indexAnswers(dataset.index, [])
        await dataset.index.reindex()
        assert.equal(
          await indexAnswers(dataset.index, []),
          answers,
          'the index agrees with the log',
        )
      })
    }
    console.log(`interrupted ${interrupted} of ${KILLS}`)
    assert.ok(interrupted > 0, 'a kill landed while the child was working')
    assert.ok(reported.length > 0, 'the children recorded something before they were killed')
    // A scan that is left to finish records the rest: the log then holds the whole dataset.
    await openDataset(data, async (dataset) => {
      await dataset.scan(root)
      const tree = await dataset.reader.tree({ length: dataset.index.indexedLength })
      const onDisk = await snapshotTree(root)
      assert.equal(
        tree.entries.map((entry) => entry.path).sort(),
        onDisk.map((entry) => entry.path).sort(),
      )
      // A kill between an append and the scan state that remembers it costs a re-read,
      // never a second version: every file was recorded exactly once.
      for (const entry of tree.entries)
        if (entry.kind === 'file')
          assert.is((await dataset.index.versionsOf(entry.path)).length, 1, entry.path)
    })
  }))

/** Every regular file in `directory` (temporary files aside) holds exactly a version of its path. */
async function assertNoTornFile(dataset: Dataset, directory: string): Promise<void> {
  for (const entry of await snapshotTree(directory)) {
    if (entry.type !== 'file' || isTemporaryName(entry.path.slice(entry.path.lastIndexOf('/') + 1)))
      continue
    const versions = await dataset.index.versionsOf(path(entry.path))
    assert.ok(
      versions.some((version) => version.kind === 'file' && version.fileHash === entry.content),
      `${entry.path} holds a whole version`,
    )
  }
}

test('kill -9 during a mirror: no torn file; reopened, the mirror continues to equal the dataset', () =>
  withTempDir(async (directory) => {
    const data = join(directory, 'data')
    const root = join(directory, 'set')
    const mirrorDirectory = join(directory, 'mirror')
    await buildLargeDataset(root, 30, 'a')
    // A first mirror completes, so that later kills interrupt batches after a saved state.
    await openDataset(data, async (dataset) => {
      await dataset.scan(root)
      await (await dataset.openMirror(mirrorDirectory)).applyTo()
    })
    let interrupted = 0
    for (let round = 0; round < KILLS; round++) {
      await buildLargeDataset(root, 40, `r${round}`)
      await openDataset(data, async (dataset) => void (await dataset.scan(root)))
      interrupted += wasInterrupted(
        await runAndKill(['mirror', data, mirrorDirectory, BATCH_RECORDS], round, 'started'),
      )
      await openDataset(data, async (dataset) => {
        await assertNoTornFile(dataset, mirrorDirectory)
        const mirror = await dataset.openMirror(mirrorDirectory)
        await mirror.applyTo()
        assert.equal(await snapshotTree(mirrorDirectory), await snapshotTree(root))
      })
    }
    console.log(`interrupted ${interrupted} of ${KILLS}`)
    assert.ok(interrupted > 0, 'a kill landed while the child was working')
  }))

test('kill -9 during a restore: no torn file; restoring again completes it', () =>
  withTempDir(async (directory) => {
    const data = join(directory, 'data')
    const root = join(directory, 'set')
    await buildLargeDataset(root, 80, 'a')
    await openDataset(data, async (dataset) => void (await dataset.scan(root)))
    let interrupted = 0
    for (let round = 0; round < KILLS; round++) {
      const destination = join(directory, `restore-${round}`)
      interrupted += wasInterrupted(
        await runAndKill(['restore', data, destination], round, 'started'),
      )
      await openDataset(data, async (dataset) => {
        // The destination may not even exist yet when the kill came early.
        if (await exists(destination)) await assertNoTornFile(dataset, destination)
        await dataset.restore({ point: { length: dataset.index.indexedLength }, destination })
        const restored = (await snapshotTree(destination)).filter(
          (entry) => !isTemporaryName(entry.path.slice(entry.path.lastIndexOf('/') + 1)),
        )
        assert.equal(restored, await snapshotTree(root))
      })
    }
    console.log(`interrupted ${interrupted} of ${KILLS}`)
    assert.ok(interrupted > 0, 'a kill landed while the child was working')
  }))

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  )
}

test.run()
