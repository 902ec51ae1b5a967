import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash } from 'node:crypto'
import { open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  ContentChunker,
  FILE_READ_BUFFER_BYTES,
  chunkAndHashFile,
  chunkBytes,
  chunkFile,
  findChunkEnds,
} from '../../storage/chunker.ts'
import {
  CHUNK_SIZE_MAX_BYTES,
  CHUNK_SIZE_MIN_BYTES,
  type Chunk,
} from '../../storage/chunk-types.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { seededBytes } from './fixtures/seeded-bytes.ts'

const MiB = 1024 * 1024

function chunkLengths(chunkEnds: readonly number[]): number[] {
  return chunkEnds.map((end, index) => end - (index === 0 ? 0 : chunkEnds[index - 1]!))
}

async function collect(chunks: AsyncIterable<Chunk>): Promise<Chunk[]> {
  const collected: Chunk[] = []
  for await (const chunk of chunks) collected.push(chunk)
  return collected
}

test('cut points are pinned: they must never change between versions', () => {
  const input = seededBytes('chunker-pinned', MiB)
  // Pins the input too, so that a change in the test helper is not mistaken for one here.
  assert.is(input.subarray(0, 8).toString('hex'), 'c2775955aaa2aee7')
  assert.equal(
    findChunkEnds(input),
    [
      31441, 110561, 170699, 238458, 321420, 436071, 470571, 490993, 522618, 552346, 573801, 629109,
      655077, 672523, 738052, 756148, 825986, 842814, 936771, 996825, 1048576,
    ],
  )
})

test('every chunk but the last is within the minimum and maximum sizes', () => {
  for (const input of [seededBytes('sizes', 16 * MiB), Buffer.alloc(4 * MiB, 7)]) {
    const lengths = chunkLengths(findChunkEnds(input))
    for (const length of lengths.slice(0, -1)) {
      assert.ok(length > CHUNK_SIZE_MIN_BYTES, `chunk of ${length} bytes is below the minimum`)
      assert.ok(length <= CHUNK_SIZE_MAX_BYTES, `chunk of ${length} bytes is above the maximum`)
    }
    assert.ok(lengths.at(-1)! <= CHUNK_SIZE_MAX_BYTES)
  }
  // Uniform bytes have no content-defined cut, so only the maximum can cut them.
  assert.equal(chunkLengths(findChunkEnds(Buffer.alloc(MiB, 7))), [
    CHUNK_SIZE_MAX_BYTES,
    CHUNK_SIZE_MAX_BYTES,
    CHUNK_SIZE_MAX_BYTES,
    CHUNK_SIZE_MAX_BYTES,
  ])
})

test('a 4 KiB insert in a large buffer adds at most 2 chunks', () => {
  const original = seededBytes('insert-original', 16 * MiB)
  const inserted = seededBytes('insert-bytes', 4096)
  const originalHashes = new Set(chunkBytes(original).map((chunk) => chunk.hash))
  const insertCount = 24
  for (let insert = 1; insert <= insertCount; insert++) {
    const at = Math.floor((original.length * insert) / (insertCount + 1))
    const edited = Buffer.concat([original.subarray(0, at), inserted, original.subarray(at)])
    const added = chunkBytes(edited).filter((chunk) => !originalHashes.has(chunk.hash))
    assert.ok(added.length >= 1, `the insert at ${at} must change a chunk`)
    assert.ok(added.length <= 2, `the insert at ${at} added ${added.length} chunks`)
  }
})

test('streaming in any split equals chunking in one piece', () => {
  const input = seededBytes('streaming', 3 * MiB)
  const expected = findChunkEnds(input)
  let state = 1
  const nextRandom = (maxExclusive: number): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    return (state >>> 8) % maxExclusive
  }
  for (const pieceSizeMax of [1, 7, 4096, 100_000, 700_000]) {
    const chunker = new ContentChunker()
    const chunkEnds: number[] = []
    for (let position = 0; position < input.length;) {
      // Empty pushes and single bytes included: the state must carry over any split.
      const size = pieceSizeMax === 1 ? 1 : nextRandom(pieceSizeMax + 1)
      chunkEnds.push(...chunker.push(input.subarray(position, position + size)))
      position += size
    }
    const last = chunker.finish()
    if (last !== null) chunkEnds.push(last)
    assert.equal(chunkEnds, expected, `pieces of up to ${pieceSizeMax} bytes`)
  }
})

test('an empty stream and an empty file have no chunks and the empty hash', async () => {
  assert.is(new ContentChunker().finish(), null)
  assert.equal(findChunkEnds(new Uint8Array(0)), [])
  await withTempDir(async (directory) => {
    const path = join(directory, 'empty')
    await writeFile(path, '')
    assert.equal(await collect(chunkFile(path)), [])
    const seen: Chunk[] = []
    const file = await chunkAndHashFile(path, {}, (chunk) => void seen.push(chunk))
    assert.is(file.fileHash, createHash('sha256').digest('hex'))
    assert.is(file.sizeBytes, 0)
    assert.equal(file.chunkHashes, [])
    assert.equal(seen, [])
  })
})

test('a file larger than the read buffer chunks as in memory, with the right file hash', async () => {
  await withTempDir(async (directory) => {
    const content = seededBytes('file', 2 * FILE_READ_BUFFER_BYTES + 12345)
    const path = join(directory, 'large')
    await writeFile(path, content)
    const expected = chunkBytes(content)

    const fromPath = await collect(chunkFile(path))
    assert.equal(
      fromPath.map((chunk) => chunk.hash),
      expected.map((chunk) => chunk.hash),
    )
    assert.ok(Buffer.concat(fromPath.map((chunk) => chunk.bytes)).equals(content))
    for (const chunk of fromPath) assert.is(chunk.hash, hashOf(chunk.bytes))

    const handle = await open(path, 'r')
    try {
      let sizeSeen = 0
      const file = await chunkAndHashFile(handle, {}, async (chunk) => {
        sizeSeen += chunk.bytes.length
        await Promise.resolve()
      })
      assert.is(file.fileHash, hashOf(content))
      assert.is(file.sizeBytes, content.length)
      assert.is(sizeSeen, content.length)
      assert.equal(
        file.chunkHashes,
        expected.map((chunk) => chunk.hash),
      )
      // The handle is the caller's: still open, and a second pass reads from offset 0 again.
      assert.is((await collect(chunkFile(handle))).length, expected.length)
    } finally {
      await handle.close()
    }
  })
})

test('chunked bytes are copies the caller may keep', async () => {
  await withTempDir(async (directory) => {
    const content = seededBytes('copies', 3 * FILE_READ_BUFFER_BYTES)
    const path = join(directory, 'file')
    await writeFile(path, content)
    const chunks = await collect(chunkFile(path))
    // Kept across later reads that reuse the read buffer, each must still match its hash.
    for (const chunk of chunks) assert.is(hashOf(chunk.bytes), chunk.hash)
  })
})

test('a missing file is NOT_FOUND and an aborted read stops', async () => {
  await withTempDir(async (directory) => {
    try {
      await collect(chunkFile(join(directory, 'absent')))
      assert.unreachable('chunking a missing file must fail')
    } catch (error) {
      assert.ok(isClusterError(error, 'NOT_FOUND'), String(error))
      assert.match((error as Error).message, 'absent')
    }
    const path = join(directory, 'file')
    await writeFile(path, seededBytes('abort', 2 * FILE_READ_BUFFER_BYTES))
    const controller = new AbortController()
    let chunksSeen = 0
    try {
      for await (const _chunk of chunkFile(path, { signal: controller.signal })) {
        chunksSeen++
        controller.abort()
      }
      assert.unreachable('an aborted read must throw')
    } catch (error) {
      assert.is((error as Error).name, 'AbortError')
    }
    assert.ok(chunksSeen < findChunkEnds(await readAll(path)).length)
  })
})

function hashOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

async function readAll(path: string): Promise<Buffer> {
  const handle = await open(path, 'r')
  try {
    return await handle.readFile()
  } finally {
    await handle.close()
  }
}

test.run()
