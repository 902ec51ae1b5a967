import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { ChunkIndex } from '../../storage/chunk-index.ts'
import { LocationCache } from '../../storage/location-cache.ts'
import type { RecordLocation } from '../../storage/pack-format.ts'
import { withTempDir } from '../helpers/temp-dir.ts'

const at = (packId: number, offset: number): RecordLocation => ({
  packId,
  offset,
  lengthBytes: 100,
})

test('the location cache forgets the least recently used entry first', () => {
  const cache = new LocationCache(2)
  const [a, b, c] = [randomBytes(33), randomBytes(33), randomBytes(33)]
  cache.set(a, at(1, 0))
  cache.set(b, at(1, 100))
  assert.equal(cache.get(a), at(1, 0)) // a is now the most recently used
  cache.set(c, at(1, 200))
  assert.is(cache.size, 2)
  assert.is(cache.get(b), undefined)
  assert.equal(cache.get(a), at(1, 0))
  assert.equal(cache.get(c), at(1, 200))
  cache.delete(a)
  assert.is(cache.get(a), undefined)
})

test('a moved or deleted chunk is looked up where it is now, never where it was', () =>
  withTempDir(async (directory) => {
    const index = await ChunkIndex.open(join(directory, 'index'))
    try {
      const [moved, deleted] = [randomBytes(32), randomBytes(32)]
      await index.write(
        {
          putChunks: [
            [moved, at(1, 0)],
            [deleted, at(1, 100)],
          ],
        },
        { sync: false },
      )
      assert.equal(await index.get(moved), at(1, 0))
      assert.equal(await index.get(deleted), at(1, 100))
      await index.write(
        { putChunks: [[moved, at(2, 0)]], deleteChunks: [deleted] },
        { sync: false },
      )
      assert.equal(await index.get(moved), at(2, 0))
      assert.is(await index.get(deleted), undefined)
    } finally {
      await index.close()
    }
  }))

test('locations survive a reopen, read from disk', () =>
  withTempDir(async (directory) => {
    const path = join(directory, 'index')
    const hash = randomBytes(32)
    let index = await ChunkIndex.open(path)
    await index.write({ putChunks: [[hash, at(7, 4096)]] }, { sync: true })
    await index.close()
    index = await ChunkIndex.open(path)
    try {
      assert.equal(await index.get(hash), at(7, 4096))
      assert.is(await index.get(randomBytes(32)), undefined)
    } finally {
      await index.close()
    }
  }))

test.run()
