// A replica's copy of a dataset is indexed only as far as its sync has declared complete
// (every chunk stored): versions beyond are neither listed nor restorable nor weighed by
// retention until their chunks are here. The length survives a restart; an index that
// went further (an older program, a lost write) is rebuilt on open.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'node:path'
import { NodeStore } from '../../storage/node-store.ts'
import type { DatasetPath } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { writeDatasetFile } from './fixtures/dataset-tree.ts'

const path = (text: string): DatasetPath => text as DatasetPath

test('a replica indexes up to its complete length, keeps it across a restart, and rebuilds an index that went further', () =>
  withTempDir(async (directory) => {
    const root = join(directory, 'set')
    await writeDatasetFile(root, 'a.txt', 'first\n')
    const master = await NodeStore.open(join(directory, 'master'))
    const own = await master.ownDataset('dataset')
    await own.scan(root)
    const firstLength = own.log.length
    await writeDatasetFile(root, 'b.txt', 'second\n')
    await own.scan(root)
    const key = own.log.core.key

    const openReplica = async (): Promise<NodeStore> => {
      const replica = await NodeStore.open(join(directory, 'replica'))
      const masterSide = master.corestore.replicate(true)
      const replicaSide = replica.corestore.replicate(false)
      masterSide.pipe(replicaSide).pipe(masterSide)
      const copy = await replica.replicaDataset('dataset', key)
      await copy.log.waitForLength(own.log.length, AbortSignal.timeout(20_000))
      return replica
    }
    try {
      let replica = await openReplica()
      let copy = await replica.replicaDataset('dataset', key)
      assert.is(copy.completeLength, 0)
      await copy.refresh()
      assert.is(copy.index.indexedLength, 0, 'nothing is listed before its chunks are here')
      assert.equal(await copy.reader.versions(path('a.txt')), [])

      await copy.markComplete(firstLength)
      await copy.refresh()
      assert.is(copy.index.indexedLength, firstLength)
      assert.is((await copy.reader.versions(path('a.txt'))).length, 1)
      assert.equal(await copy.reader.versions(path('b.txt')), [], 'b.txt is not complete yet')
      await copy.markComplete(firstLength - 1) // never goes back
      assert.is(copy.completeLength, firstLength)
      await replica.close()

      replica = await openReplica()
      copy = await replica.replicaDataset('dataset', key)
      assert.is(copy.completeLength, firstLength, 'kept across a restart')
      assert.is(copy.index.rebuildReason, null)
      await copy.markComplete(copy.log.length)
      await copy.refresh()
      assert.is((await copy.reader.versions(path('b.txt'))).length, 1)
      // The kept length lost (written without a sync): the index, now ahead of it, is rebuilt.
      await replica.database.sublevel(['dataset', 'dataset', 'settings']).put('completeLength', '1')
      await replica.close()

      replica = await openReplica()
      copy = await replica.replicaDataset('dataset', key)
      assert.match(copy.index.rebuildReason ?? '', /only 1 records are complete here/)
      assert.is(copy.index.indexedLength, 1)
      await replica.close()
    } finally {
      await master.close()
    }
  }))

test.run()
