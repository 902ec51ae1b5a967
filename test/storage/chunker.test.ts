import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  ContentChunker,
  chunkBytes,
  findChunkEnds,
  hashChunk,
  hashedChunk,
  isHashedChunk,
  type HashedChunk,
} from '../../storage/chunker.ts'
import {
  CHUNKS_IN_FLIGHT_MAX,
  FILE_READ_BYTES,
  READ_BUFFERS_PER_FILE,
  chunkAndHashFile,
  type ChunkedFile,
  type FileSource,
} from '../../storage/file-chunker.ts'
import {
  CHUNK_SIZE_MAX_BYTES,
  CHUNK_SIZE_MIN_BYTES,
  type Chunk,
  type ChunkHash,
} from '../../storage/chunk-types.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { seededBytes } from './fixtures/seeded-bytes.ts'

const MiB = 1024 * 1024

function chunkLengths(chunkEnds: readonly number[]): number[] {
  return chunkEnds.map((end, index) => end - (index === 0 ? 0 : chunkEnds[index - 1]!))
}

/** Chunks a file, keeping a copy of every chunk's bytes as the store saw them. */
async function chunkCopies(
  source: FileSource,
  options: { signal?: AbortSignal } = {},
): Promise<{ file: ChunkedFile; copies: Map<ChunkHash, Buffer> }> {
  const copies = new Map<ChunkHash, Buffer>()
  const { file, stored } = await chunkAndHashFile(source, options, async (chunk) => {
    copies.set(chunk.hash, Buffer.from(chunk.bytes))
  })
  await stored
  return { file, copies }
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
    const { file, copies } = await chunkCopies(path)
    assert.is(file.fileHash, createHash('sha256').digest('hex'))
    assert.is(file.sizeBytes, 0)
    assert.equal(file.chunks, [])
    assert.is(copies.size, 0)
  })
})

test('a file over many read buffers chunks as in memory, with the right file hash', async () => {
  await withTempDir(async (directory) => {
    // Enough reads that every buffer is read into again, and a tail that is not a whole read.
    const content = seededBytes('file', (READ_BUFFERS_PER_FILE + 1) * FILE_READ_BYTES + 12345)
    const path = join(directory, 'large')
    await writeFile(path, content)
    const expected = chunkBytes(content).map((chunk) => ({
      hash: chunk.hash,
      lengthBytes: chunk.bytes.length,
    }))

    const { file, copies } = await chunkCopies(path)
    assert.equal(file.chunks, expected)
    assert.is(file.fileHash, hashOf(content))
    assert.is(file.sizeBytes, content.length)
    const inOrder = file.chunks.map((chunk) => copies.get(chunk.hash)!)
    assert.ok(Buffer.concat(inOrder).equals(content))

    const handle = await open(path, 'r')
    try {
      assert.equal((await chunkCopies(handle)).file, file)
      // The handle is the caller's: still open, and a second pass reads from offset 0 again.
      assert.equal((await chunkCopies(handle)).file, file)
    } finally {
      await handle.close()
    }
  })
})

test("a chunk's bytes stay as they were until its store settles, however slow", async () => {
  await withTempDir(async (directory) => {
    // Not a whole number of reads, so the last read is short. Random bytes make chunks of
    // about the average size; a random start and then a pattern of a prime period, chunks
    // of the maximum size, few per read, that do not line up with the reads.
    const sizeBytes = (2 * READ_BUFFERS_PER_FILE + 1) * FILE_READ_BYTES + 54321
    const patterned = Buffer.alloc(sizeBytes)
    for (let index = 0; index < sizeBytes; index++) patterned[index] = ((index % 251) * 7) % 256
    seededBytes('slow-store-start', 200_000).copy(patterned)
    const ends = findChunkEnds(patterned)
    assert.ok(ends.length < sizeBytes / (CHUNK_SIZE_MAX_BYTES / 2), 'mostly the largest chunks')
    assert.ok(ends[0]! % CHUNK_SIZE_MAX_BYTES !== 0, 'chunks do not line up with the reads')
    for (const content of [seededBytes('slow-store', sizeBytes), patterned]) {
      const path = join(directory, 'file')
      await writeFile(path, content)
      let inFlight = 0
      let inFlightMax = 0
      let stored = 0
      const { file, stored: allStored } = await chunkAndHashFile(path, {}, async (chunk) => {
        inFlight++
        inFlightMax = Math.max(inFlightMax, inFlight)
        // Later reads go on meanwhile; the buffer under these bytes must not be read into,
        // nor written over. Chunks carried over from the buffer before (they begin in the
        // room at the start of their buffer, which is written into too) are held longest.
        const carried = chunk.bytes.byteOffset < CHUNK_SIZE_MAX_BYTES
        await new Promise((resolve) => setTimeout(resolve, carried ? 50 : stored % 7))
        stored++
        assert.is(hashOf(chunk.bytes), chunk.hash)
        inFlight--
      })
      await allStored
      assert.is(stored, file.chunks.length)
      assert.is(file.fileHash, hashOf(content))
      assert.ok(inFlightMax > 1, 'chunks are stored several at a time')
      assert.ok(inFlightMax <= CHUNKS_IN_FLIGHT_MAX, `${inFlightMax} chunks were in flight`)
    }
  })
})

test('a failing store stops the read and its error is thrown', async () => {
  await withTempDir(async (directory) => {
    const path = join(directory, 'file')
    await writeFile(path, seededBytes('failing-store', 3 * FILE_READ_BYTES))
    const failure = new Error('disk full')
    let calls = 0
    try {
      const { stored } = await chunkAndHashFile(path, {}, async () => {
        if (++calls === 3) throw failure
      })
      await stored
      assert.unreachable('the store failure must be thrown')
    } catch (error) {
      assert.is(error, failure)
    }
    assert.ok(calls < findChunkEnds(content(path)).length, 'the read stopped early')
    // The last chunk's store can fail after the read is done: `stored` says so.
    const small = join(directory, 'small')
    await writeFile(small, 'one chunk')
    const { file, stored } = await chunkAndHashFile(small, {}, () => Promise.reject(failure))
    assert.is(file.sizeBytes, 'one chunk'.length)
    await stored.then(
      () => assert.unreachable('the failed store must reject `stored`'),
      (error: unknown) => assert.is(error, failure),
    )
  })
})

test('a missing file is NOT_FOUND and an aborted read stops', async () => {
  await withTempDir(async (directory) => {
    try {
      await chunkCopies(join(directory, 'absent'))
      assert.unreachable('chunking a missing file must fail')
    } catch (error) {
      assert.ok(isClusterError(error, 'NOT_FOUND'), String(error))
      assert.match((error as Error).message, 'absent')
    }
    const path = join(directory, 'file')
    await writeFile(path, seededBytes('abort', 3 * FILE_READ_BYTES))
    const controller = new AbortController()
    let chunksSeen = 0
    try {
      await chunkAndHashFile(path, { signal: controller.signal }, async () => {
        chunksSeen++
        controller.abort()
      })
      assert.unreachable('an aborted read must throw')
    } catch (error) {
      assert.is((error as Error).name, 'AbortError')
    }
    assert.ok(chunksSeen < findChunkEnds(content(path)).length)
  })
})

test('chunks are marked as hashed here only when this process hashed them', () => {
  for (const length of [0, 100, CHUNK_SIZE_MAX_BYTES]) {
    const bytes = seededBytes(`mark-${length}`, length)
    const chunk = hashedChunk(bytes)
    assert.is(chunk.hash, hashOf(bytes), `${length} bytes`)
    assert.is(chunk.bytes, bytes)
    assert.ok(isHashedChunk(chunk))
    assert.ok(Object.isFrozen(chunk), 'a marked chunk cannot be given other bytes')
  }
  const bytes = seededBytes('forged', 1000)
  const forged = { hash: hashChunk(bytes), bytes } as Chunk as HashedChunk
  assert.not.ok(isHashedChunk(forged), 'a cast is not a mark')
  assert.not.ok(isHashedChunk({ ...hashedChunk(bytes) }), 'nor is a copy of a marked chunk')
})

function hashOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function content(path: string): Buffer {
  return readFileSync(path)
}

test.run()
