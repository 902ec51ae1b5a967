// The gate of the node's chunk store, on a real store: a has() or put() of a chunk that
// prune is about to drop waits until prune has finished, then finds the chunk gone (and a
// put stores it again), so that the record they are for never names a chunk that is gone.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'node:path'
import { ChunkStore } from '../../storage/chunk-store.ts'
import { chunkBytes } from '../../storage/chunker.ts'
import { GatedChunkStore } from '../../storage/gated-chunk-store.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { contentBytes } from './fixtures/dataset-tree.ts'

for (const putName of ['put', 'putHashed'] as const)
  test(`has and ${putName} while prune takes and uses its live set wait, then find the dropped chunk gone`, () =>
    withTempDir(async (directory) => {
      const store = new GatedChunkStore(await ChunkStore.open(join(directory, 'chunks')))
      try {
        const [dead, live] = chunkBytes(contentBytes('gate', 200_000))
        assert.ok(dead !== undefined && live !== undefined && dead.hash !== live.hash)
        for (const chunk of [dead, live]) await store.put(chunk.hash, chunk.bytes)
        await store.flush()

        let releaseLiveSet = (): void => {}
        const liveSetTaken = new Promise<void>((resolve) => (releaseLiveSet = resolve))
        const events: string[] = []
        const pruning = store
          .pruneWithLiveSet(
            async () => {
              events.push('live set taken')
              await liveSetTaken
              return (hash) => hash === live.hash
            },
            { liveShareThreshold: 1 },
          )
          .then((report) => {
            events.push('prune done')
            return report
          })
        await new Promise((resolve) => setImmediate(resolve))
        const asking = store.has(dead.hash).then((found) => {
          events.push(found ? 'has: yes' : 'has: no')
        })
        const putting = asking.then(() =>
          (putName === 'put' ? store.put(dead.hash, dead.bytes) : store.putHashed(dead)).then(
            (stored) => {
              events.push(stored ? 'put stored' : 'put found it')
              return stored
            },
          ),
        )
        for (let turn = 0; turn < 20; turn++) await new Promise((resolve) => setImmediate(resolve))
        assert.equal(events, ['live set taken'], 'has and put wait while prune runs')
        releaseLiveSet()
        const [report, stored] = await Promise.all([pruning, putting])
        assert.equal(events, ['live set taken', 'prune done', 'has: no', 'put stored'])
        assert.is(report.chunksDropped, 1)
        assert.ok(stored)
        assert.ok(Buffer.from(await store.get(dead.hash)).equals(dead.bytes))
      } finally {
        await store.close()
      }
    }))

test('prune waits for puts already running, and reads go on during prune', () =>
  withTempDir(async (directory) => {
    const store = new GatedChunkStore(await ChunkStore.open(join(directory, 'chunks')))
    try {
      const chunks = chunkBytes(contentBytes('gate-many', 2_000_000))
      const puts = chunks.map((chunk) => store.put(chunk.hash, chunk.bytes))
      let liveSetTakenAfter = -1
      const report = await store.pruneWithLiveSet(
        async () => {
          liveSetTakenAfter = (
            await Promise.all(puts.map((put) => Promise.race([put, 'running'])))
          ).filter((outcome) => outcome === 'running').length
          // Reads are not held back: a restore goes on while prune decides.
          assert.ok(Buffer.from(await store.get(chunks[0]!.hash)).equals(chunks[0]!.bytes))
          return () => true
        },
        { liveShareThreshold: 0.5 },
      )
      assert.is(liveSetTakenAfter, 0, 'no put was still running when the live set was taken')
      assert.is(report.chunksDropped, 0)
      for (const chunk of chunks) assert.ok(await store.has(chunk.hash))
    } finally {
      await store.close()
    }
  }))

test.run()
