// Restore writes several files at once (their syncs overlap): a tree of many files still
// comes back whole and counted right, and a failure that is not a skippable one (the store
// closing under the restore) ends the restore with that error once every file in flight
// has settled, leaving no temporary file and no unhandled rejection behind. A restore that
// ends before the close (a loaded machine) is tried again on a bigger tree.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { NodeStore } from '../../storage/node-store.ts'
import { RESTORE_FILES_IN_FLIGHT_MAX, isTemporaryName } from '../../storage/restore.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import {
  contentBytes,
  settleDirectories,
  snapshotTree,
  writeDatasetFile,
} from './fixtures/dataset-tree.ts'

const FILES = 20 * RESTORE_FILES_IN_FLIGHT_MAX
/** Trees, each twice the one before, that the close-under-restore test tries. */
const CLOSE_ATTEMPTS_MAX = 3
/** Polls of the destination, 2 ms apart, before the test gives up. */
const WAITS_MAX = 10_000

async function buildTree(root: string, files = FILES): Promise<number> {
  let bytes = 0
  for (let number = 0; number < files; number++) {
    const content = contentBytes(`parallel-${number}`, 100 + ((number * 7919) % 90_000))
    await writeDatasetFile(root, `d${number % 9}/f${number}.bin`, content, {
      mode: 0o600 + (number % 64),
    })
    bytes += content.length
  }
  await settleDirectories(root)
  return bytes
}

test('a tree of many files restores whole, with every file counted once', () =>
  withTempDir(async (directory) => {
    const root = join(directory, 'set')
    const bytes = await buildTree(root)
    const store = await NodeStore.open(join(directory, 'data'))
    try {
      const dataset = await store.ownDataset('dataset')
      await dataset.scan(root)
      const destination = join(directory, 'restored')
      const result = await dataset.restore({ point: { length: dataset.log.length }, destination })
      assert.equal(
        [result.files, result.directories, result.bytes, result.skipped],
        [FILES, 9, bytes, []],
      )
      assert.equal(await snapshotTree(destination), await snapshotTree(root))
    } finally {
      await store.close()
    }
  }))

/**
 * Restores `root` and closes the store once the first files are in place. On a loaded
 * machine the restore may have ended by then: 'finished first', and the caller tries a
 * bigger tree.
 */
async function closeUnderRestore(
  directory: string,
  root: string,
  attempt: number,
): Promise<'closed' | 'finished first'> {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
  process.on('unhandledRejection', onUnhandled)
  const store = await NodeStore.open(join(directory, `data-${attempt}`))
  try {
    const dataset = await store.ownDataset('dataset')
    await dataset.scan(root)
    const destination = join(directory, `restored-${attempt}`)
    const restoring = dataset.restore({ point: { length: dataset.log.length }, destination })
    // Closed once the first file is in place (after its 9 directories), with most of the tree still to come.
    // Counted by name only: reading the files back took long enough for the restore to end.
    const written = async (): Promise<number> =>
      (await readdir(destination, { recursive: true }).catch(() => [])).length
    for (let waits = 0; (await written()) < 10; waits++) {
      assert.ok(waits < WAITS_MAX, 'the restore wrote its first files')
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    await store.close()
    const error = await restoring.then(
      () => null,
      (failure: unknown) => failure,
    )
    if (error === null) return 'finished first'
    assert.ok(error instanceof Error, 'the restore failed')
    const leftovers = (await snapshotTree(destination)).filter((entry) =>
      isTemporaryName(entry.path.slice(entry.path.lastIndexOf('/') + 1)),
    )
    assert.equal(leftovers, [], 'no temporary file is left')
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal(unhandled, [])
    return 'closed'
  } finally {
    process.off('unhandledRejection', onUnhandled)
    await store.close()
  }
}

test('a store closing under a restore ends it with an error, after the files in flight settled', () =>
  withTempDir(async (directory) => {
    const root = join(directory, 'set')
    // Twice the files of the test above, then more while the restore still ends first.
    const outcomes: string[] = []
    for (let attempt = 0; attempt < CLOSE_ATTEMPTS_MAX; attempt++) {
      await buildTree(root, 2 ** (attempt + 1) * FILES)
      outcomes.push(await closeUnderRestore(directory, root, attempt))
      if (outcomes.at(-1) === 'closed') break
    }
    assert.is(
      outcomes.at(-1),
      'closed',
      `the store closed under a restore (${outcomes.join(', ')})`,
    )
  }))

test.run()
