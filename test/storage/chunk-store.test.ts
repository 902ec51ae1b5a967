import { test } from 'uvu'
import * as assert from 'uvu/assert'
import {
  appendFile,
  copyFile,
  open,
  readFile,
  readdir,
  stat,
  truncate,
  writeFile,
} from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  ClusterError,
  isClusterError,
  type ClusterErrorCode,
} from '../../consensus/cluster-error.ts'
import {
  ChunkStore,
  GET_MANY_CHUNKS_MAX,
  PUTS_IN_FLIGHT_MAX,
  getEach,
} from '../../storage/chunk-store.ts'
import { AssertionFailure } from '../../consensus/assert.ts'
import { LOOKUP_BATCH_KEYS_MAX } from '../../storage/chunk-index.ts'
import { hashChunk, hashedChunk, type HashedChunk } from '../../storage/chunker.ts'
import type { Chunk, ChunkHash } from '../../storage/chunk-types.ts'
import { RECORD_HEADER_BYTES, packFileName } from '../../storage/pack-format.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import {
  directoryBytes,
  findRecord,
  packFiles,
  seriesChunk,
  seriesChunks,
} from './fixtures/chunk-store-files.ts'

const SMALL_PACK_BYTES = 512 * 1024

async function rejects(
  promise: Promise<unknown>,
  code: ClusterErrorCode,
  mention?: string,
): Promise<void> {
  try {
    await promise
  } catch (error) {
    assert.ok(isClusterError(error, code), `expected ${code}, got ${String(error)}`)
    if (mention !== undefined) assert.match((error as Error).message, mention)
    return
  }
  assert.unreachable(`expected ${code}`)
}

async function assertStored(store: ChunkStore, chunks: readonly Chunk[]): Promise<void> {
  for (const chunk of chunks) {
    assert.ok(await store.has(chunk.hash), `has ${chunk.hash}`)
    assert.ok(
      Buffer.from(await store.get(chunk.hash)).equals(chunk.bytes),
      `bytes of ${chunk.hash}`,
    )
  }
}

async function putAll(store: ChunkStore, chunks: readonly Chunk[]): Promise<boolean[]> {
  return Promise.all(chunks.map((chunk) => store.put(chunk.hash, chunk.bytes)))
}

async function withStore<T>(
  directory: string,
  body: (store: ChunkStore) => Promise<T>,
  options: { packSizeBytesMax?: number } = {},
): Promise<T> {
  const store = await ChunkStore.open(directory, options)
  try {
    return await body(store)
  } finally {
    await store.close()
  }
}

test('put, has and get, before and after flush', async () => {
  await withTempDir(async (directory) => {
    const [first, second] = seriesChunks('basic', 2) as [Chunk, Chunk]
    await withStore(directory, async (store) => {
      assert.not.ok(await store.has(first.hash))
      await rejects(store.get(first.hash), 'NOT_FOUND', first.hash)
      assert.ok(await store.put(first.hash, first.bytes))
      // Visible before flush, while the record is still in the write buffer.
      await assertStored(store, [first])
      await store.flush()
      assert.ok(await store.put(second.hash, second.bytes))
      await assertStored(store, [first, second])
      assert.not.ok(await store.has(seriesChunk('basic', 3).hash))
    })
  })
})

test('the same chunk is stored once: the second put returns false', async () => {
  await withTempDir(async (directory) => {
    const chunk = seriesChunk('dedup', 0)
    await withStore(directory, async (store) => {
      assert.ok(await store.put(chunk.hash, chunk.bytes))
      assert.not.ok(await store.put(chunk.hash, Buffer.from(chunk.bytes)))
      await store.flush()
      assert.not.ok(await store.put(chunk.hash, chunk.bytes))
    })
    await withStore(directory, async (store) => {
      assert.not.ok(await store.put(chunk.hash, chunk.bytes))
      const stats = await store.stats()
      assert.equal(stats, {
        chunks: 1,
        packs: 1,
        packBytes: RECORD_HEADER_BYTES + chunk.bytes.length,
        liveBytes: chunk.bytes.length,
      })
    })
    const [pack] = await packFiles(directory)
    assert.is((await stat(pack!)).size, RECORD_HEADER_BYTES + chunk.bytes.length)
  })
})

test('a put whose bytes do not match the hash is refused and stores nothing', async () => {
  await withTempDir(async (directory) => {
    const [claimed, actual] = seriesChunks('mismatch', 2) as [Chunk, Chunk]
    await withStore(directory, async (store) => {
      await rejects(store.put(claimed.hash, actual.bytes), 'HASH_MISMATCH', claimed.hash)
      assert.not.ok(await store.has(claimed.hash))
      assert.not.ok(await store.has(actual.hash))
      await store.flush()
      assert.equal(await store.stats(), { chunks: 0, packs: 0, packBytes: 0, liveBytes: 0 })
    })
    assert.equal(await packFiles(directory), [])
  })
})

test('putHashed stores a chunk hashed here; put verifies even the bytes of one', async () => {
  await withTempDir(async (directory) => {
    await withStore(directory, async (store) => {
      const bytes = Buffer.from(seriesChunk('hashed-here', 0).bytes)
      const chunk = hashedChunk(bytes)
      assert.ok(await store.putHashed(chunk))
      assert.not.ok(await store.putHashed(chunk), 'a second put finds it stored')
      assert.ok(Buffer.from(await store.get(chunk.hash)).equals(bytes))
      // Bytes changed after hashing: put() hashes them again and refuses them.
      const changed = hashedChunk(Buffer.from(seriesChunk('hashed-here', 1).bytes))
      changed.bytes[0]! ^= 1
      await rejects(store.put(changed.hash, changed.bytes), 'HASH_MISMATCH', changed.hash)
      // A chunk that only claims to be hashed here is a programmer's error, not stored.
      const forged = { hash: changed.hash, bytes: changed.bytes } as Chunk as HashedChunk
      try {
        await store.putHashed(forged)
        assert.unreachable('a forged chunk must be refused')
      } catch (error) {
        assert.instance(error, AssertionFailure)
      }
      assert.not.ok(await store.has(changed.hash))
    })
  })
})

test('only the ingest puts chunks without verifying them: chunks from peers are verified', async () => {
  // Chunks that arrive from other nodes (node/wire, node/replication) must go through
  // put(), which hashes them. putHashed() is for what this process has just hashed.
  const allowed = new Set([
    'storage/ingest.ts',
    'storage/chunk-store.ts',
    'storage/gated-chunk-store.ts',
  ])
  const root = fileURLToPath(new URL('../../', import.meta.url))
  const callers: string[] = []
  // The program's folders (the benchmarks measure putHashed on chunks they hashed themselves).
  for (const folder of ['consensus', 'storage', 'node', 'sim']) {
    for (const name of await readdir(join(root, folder), { recursive: true })) {
      const path = `${folder}/${name}`
      if (!path.endsWith('.ts') || allowed.has(path)) continue
      if ((await readFile(join(root, path), 'utf8')).includes('putHashed')) callers.push(path)
    }
  }
  assert.equal(callers, [], 'files that call putHashed')
  const fetchRun = await readFile(join(root, 'node/wire/chunk-fetch-run.ts'), 'utf8')
  assert.match(fetchRun, 'chunkStore.put(', 'the chunk fetcher stores through put()')
})

test('bad arguments are refused with BAD_ARGUMENT', async () => {
  await withTempDir(async (directory) => {
    await withStore(directory, async (store) => {
      await rejects(store.has('ABC' as ChunkHash), 'BAD_ARGUMENT')
      await rejects(store.get(`${'0'.repeat(63)}g` as ChunkHash), 'BAD_ARGUMENT')
      const tooLarge = Buffer.alloc(256 * 1024 + 1)
      await rejects(store.put(hashChunk(tooLarge), tooLarge), 'BAD_ARGUMENT')
      await rejects(
        store.prune(() => true, { liveShareThreshold: 1.5 }),
        'BAD_ARGUMENT',
      )
    })
  })
})

test('chunks survive a close and reopen', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('reopen', 40)
    await withStore(directory, async (store) => {
      await putAll(store, chunks.slice(0, 20))
      await store.flush()
      await putAll(store, chunks.slice(20))
      // close() flushes what is left.
    })
    await withStore(directory, async (store) => {
      assert.equal(store.recovery, {
        chunksReindexed: 0,
        tornBytesCut: 0,
        packsRemoved: 0,
        packsDamaged: [],
      })
      await assertStored(store, chunks)
      assert.is((await store.stats()).chunks, chunks.length)
    })
  })
})

test('packs roll over at their size bound and every pack stays within it', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('rollover', 80)
    await withStore(
      directory,
      async (store) => {
        for (const chunk of chunks) await store.put(chunk.hash, chunk.bytes)
        await store.flush()
      },
      { packSizeBytesMax: SMALL_PACK_BYTES },
    )
    const packs = await packFiles(directory)
    const totalBytes = chunks.reduce((sum, chunk) => sum + chunk.bytes.length, 0)
    assert.ok(packs.length >= Math.ceil(totalBytes / SMALL_PACK_BYTES), `${packs.length} packs`)
    for (const pack of packs) assert.ok((await stat(pack)).size <= SMALL_PACK_BYTES, pack)
    await withStore(directory, (store) => assertStored(store, chunks), {
      packSizeBytesMax: SMALL_PACK_BYTES,
    })
  })
})

test('concurrent puts of overlapping chunks store each once, while reads run', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('concurrent', 150)
    await withStore(
      directory,
      async (store) => {
        const doubled = [...chunks, ...chunks.slice(0, 75), ...chunks.slice(50)]
        const reads = chunks.slice(0, 30).map((chunk) =>
          store.get(chunk.hash).then(
            (bytes) => assert.ok(Buffer.from(bytes).equals(chunk.bytes)),
            (error: unknown) => assert.ok(isClusterError(error, 'NOT_FOUND'), String(error)),
          ),
        )
        const stored = await putAll(store, doubled)
        await Promise.all(reads)
        await Promise.all([store.flush(), putAll(store, chunks.slice(100)), store.flush()])
        assert.is(stored.filter(Boolean).length, chunks.length)
        const stats = await store.stats()
        assert.is(stats.chunks, chunks.length)
        const totalBytes = chunks.reduce((sum, chunk) => sum + chunk.bytes.length, 0)
        assert.is(stats.liveBytes, totalBytes)
        assert.is(stats.packBytes, totalBytes + chunks.length * RECORD_HEADER_BYTES)
      },
      { packSizeBytesMax: SMALL_PACK_BYTES },
    )
    await withStore(directory, (store) => assertStored(store, chunks))
  })
})

test('look-ups beyond one batch, of stored and missing chunks at once, each get their answer', async () => {
  await withTempDir(async (directory) => {
    const stored = seriesChunks('lookups', LOOKUP_BATCH_KEYS_MAX + 20)
    const missing = seriesChunks('lookups-missing', LOOKUP_BATCH_KEYS_MAX + 20)
    await withStore(directory, async (store) => {
      await putAll(store, stored)
      await store.flush()
    })
    await withStore(directory, async (store) => {
      // Interleaved, so that every batch holds both kinds.
      const asked = stored.flatMap((chunk, index) => [chunk, missing[index]!])
      const answers = await Promise.all(asked.map((chunk) => store.has(chunk.hash)))
      assert.equal(
        answers,
        asked.map((_, index) => index % 2 === 0),
      )
      const read = await Promise.all(stored.map((chunk) => store.get(chunk.hash)))
      read.forEach((bytes, index) => assert.ok(Buffer.from(bytes).equals(stored[index]!.bytes)))
    })
  })
})

test('damaged pack bytes are reported for that chunk; the others still read', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('corrupt', 6)
    await withStore(directory, async (store) => {
      await putAll(store, chunks)
    })
    const [packPath] = await packFiles(directory)
    const payloadDamaged = chunks[1]!
    const headerDamaged = chunks[4]!
    const payload = await findRecord(packPath!, payloadDamaged.hash)
    const header = await findRecord(packPath!, headerDamaged.hash)
    const handle = await open(packPath!, 'r+')
    try {
      // Flip one payload byte in one record, and one byte of the stored hash in another.
      const payloadAt = payload.offset + RECORD_HEADER_BYTES + 100
      await handle.write(Buffer.from([payload.file[payloadAt]! ^ 0xff]), 0, 1, payloadAt)
      const headerAt = header.offset + 20
      await handle.write(Buffer.from([header.file[headerAt]! ^ 0x01]), 0, 1, headerAt)
    } finally {
      await handle.close()
    }
    await withStore(directory, async (store) => {
      await rejects(store.get(payloadDamaged.hash), 'HASH_MISMATCH', payloadDamaged.hash)
      await rejects(store.get(headerDamaged.hash), 'CORRUPT_STORE', headerDamaged.hash)
      await assertStored(
        store,
        chunks.filter((chunk) => chunk !== payloadDamaged && chunk !== headerDamaged),
      )
    })
  })
})

test('getMany gives each chunk or its error in its place, across packs, as get() does', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('get-many', 40)
    const [damaged, missing] = [chunks[17]!, seriesChunk('get-many-missing', 0)]
    await withStore(directory, (store) => putAll(store, chunks), {
      packSizeBytesMax: SMALL_PACK_BYTES,
    })
    let damagedPacks = 0
    for (const path of await packFiles(directory)) {
      const { offset, file } = await findRecord(path, damaged.hash)
      if (offset < 0) continue
      const at = offset + RECORD_HEADER_BYTES + 10
      const handle = await open(path, 'r+')
      await handle.write(Buffer.from([file[at]! ^ 0xff]), 0, 1, at)
      await handle.close()
      damagedPacks++
    }
    assert.is(damagedPacks, 1)
    await withStore(
      directory,
      async (store) => {
        const unflushed = seriesChunks('get-many-unflushed', 3)
        await putAll(store, unflushed)
        // In file order (so runs form), with a repeat, a gap, damage and unflushed chunks.
        const asked = [
          ...chunks.slice(0, 30),
          chunks[3]!,
          missing,
          ...unflushed,
          ...chunks.slice(30),
        ]
        const hashes = asked.map((chunk) => chunk.hash)
        const many = await store.getMany(hashes)
        const each = await getEach(store, hashes)
        asked.forEach((chunk, index) => {
          const [got, expected] = [many[index]!, each[index]!]
          if (chunk === damaged || chunk === missing) {
            assert.ok(got instanceof ClusterError && expected instanceof ClusterError)
            assert.is(got.code, chunk === damaged ? 'HASH_MISMATCH' : 'NOT_FOUND')
            assert.is(got.message, expected.message)
          } else {
            assert.ok(Buffer.from(got as Uint8Array).equals(chunk.bytes), `chunk ${index}`)
          }
        })
        // Results are the caller's: a later call leaves them as they were.
        await store.getMany(hashes.slice(0, GET_MANY_CHUNKS_MAX))
        assert.ok(Buffer.from(many[0] as Uint8Array).equals(chunks[0]!.bytes))
        await rejects(
          store.getMany(Array.from({ length: GET_MANY_CHUNKS_MAX + 1 }, () => chunks[0]!.hash)),
          'BAD_ARGUMENT',
        )
      },
      { packSizeBytesMax: SMALL_PACK_BYTES },
    )
  })
})

test('a pack cut short behind the index: CORRUPT_STORE for the lost chunk, the rest reads', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('cut-short', 6)
    await withStore(directory, (store) => putAll(store, chunks))
    const [packPath] = await packFiles(directory)
    const lost = chunks[5]!
    const { offset } = await findRecord(packPath!, lost.hash)
    await truncate(packPath!, offset + RECORD_HEADER_BYTES + 10)
    const later = seriesChunk('cut-short', 6)
    await withStore(directory, async (store) => {
      assert.equal(store.recovery.packsDamaged, [1])
      await rejects(store.get(lost.hash), 'CORRUPT_STORE', lost.hash)
      await assertStored(store, chunks.slice(0, 5))
      // New chunks go to a new pack, never after the damage.
      assert.ok(await store.put(later.hash, later.bytes))
    })
    await withStore(directory, (store) => assertStored(store, [...chunks.slice(0, 5), later]))
    assert.is((await packFiles(directory)).length, 2)
  })
})

test('on open, a torn record at the end of a pack is cut off and whole unindexed ones are indexed', async () => {
  await withTempDir(async (directory) => {
    const indexed = seriesChunks('torn', 3)
    const [whole, torn] = seriesChunks('torn', 2, 3) as [Chunk, Chunk]
    await withStore(directory, (store) => putAll(store, indexed))
    const [packPath] = await packFiles(directory)
    const indexedSize = (await stat(packPath!)).size
    // Real records, written by a store elsewhere: one whole, the next cut in the middle.
    const elsewhere = join(directory, 'elsewhere')
    await withStore(elsewhere, async (store) => {
      await store.put(whole.hash, whole.bytes)
      await store.put(torn.hash, torn.bytes)
    })
    const [otherPack] = await packFiles(elsewhere)
    const tornAt = RECORD_HEADER_BYTES + whole.bytes.length + RECORD_HEADER_BYTES + 5000
    await truncate(otherPack!, tornAt)
    await appendFile(packPath!, await readFile(otherPack!))

    const next = seriesChunk('torn', 5)
    await withStore(directory, async (store) => {
      assert.is(store.recovery.chunksReindexed, 1)
      assert.is(store.recovery.tornBytesCut, RECORD_HEADER_BYTES + 5000)
      assert.is(
        (await stat(packPath!)).size,
        indexedSize + RECORD_HEADER_BYTES + whole.bytes.length,
      )
      await assertStored(store, [...indexed, whole])
      await rejects(store.get(torn.hash), 'NOT_FOUND')
      assert.ok(await store.put(torn.hash, torn.bytes))
      assert.ok(await store.put(next.hash, next.bytes))
    })
    await withStore(directory, async (store) => {
      assert.is(store.recovery.chunksReindexed, 0)
      await assertStored(store, [...indexed, whole, torn, next])
    })
    assert.is((await packFiles(directory)).length, 1)
  })
})

test('a pack that nothing indexes, left by a prune that died, is deleted on open', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('orphan', 10)
    await withStore(directory, (store) => putAll(store, chunks))
    const [packPath] = await packFiles(directory)
    // A rewrite's copy that its index batch never named: the same records, a newer pack.
    const orphanPath = join(directory, 'packs', packFileName(7))
    await copyFile(packPath!, orphanPath)
    await writeFile(join(directory, 'packs', packFileName(8)), '')
    await withStore(directory, async (store) => {
      assert.is(store.recovery.packsRemoved, 2)
      assert.is(store.recovery.chunksReindexed, 0)
      await assertStored(store, chunks)
    })
    assert.equal(await packFiles(directory), [packPath])
  })
})

test('prune drops dead chunks, rewrites sparse packs, deletes dead ones and frees the space', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('prune', 120)
    // Chunks 0-39 die together (whole packs go), then every third one (packs get sparse).
    const isDead = (index: number): boolean => index < 40 || index % 3 === 0
    const live = chunks.filter((_, index) => !isDead(index))
    const dead = chunks.filter((_, index) => isDead(index))
    const options = { packSizeBytesMax: SMALL_PACK_BYTES }
    await withStore(
      directory,
      async (store) => {
        for (const chunk of chunks) await store.put(chunk.hash, chunk.bytes)
        await store.flush()
        const packsBefore = await packFiles(directory)
        const bytesBefore = await directoryBytes(join(directory, 'packs'))
        const deadHashes = new Set(dead.map((chunk) => chunk.hash))
        const report = await store.prune((hash) => !deadHashes.has(hash), {
          liveShareThreshold: 0.8,
        })
        const bytesAfter = await directoryBytes(join(directory, 'packs'))
        assert.is(report.chunksDropped, dead.length)
        assert.ok(report.packsDeleted >= 3, `${report.packsDeleted} packs deleted`)
        assert.ok(report.packsRewritten >= 3, `${report.packsRewritten} packs rewritten`)
        assert.is(report.bytesFreed, bytesBefore - bytesAfter)
        const liveRecordBytes = live.reduce(
          (sum, chunk) => sum + RECORD_HEADER_BYTES + chunk.bytes.length,
          0,
        )
        // Only live records remain (rewritten packs hold no dead ones, and no pack was kept).
        assert.ok(bytesAfter <= liveRecordBytes * 1.25, `${bytesAfter} bytes after prune`)
        assert.ok(packsBefore.length > (await packFiles(directory)).length)
        for (const chunk of dead) {
          assert.not.ok(await store.has(chunk.hash))
          await rejects(store.get(chunk.hash), 'NOT_FOUND')
        }
        await assertStored(store, live)
        const stats = await store.stats()
        assert.is(stats.chunks, live.length)
        assert.is(stats.packBytes, bytesAfter)
        // Puts after a prune go on as before.
        const after = seriesChunk('prune', 500)
        assert.ok(await store.put(after.hash, after.bytes))
        live.push(after)
      },
      options,
    )
    await withStore(
      directory,
      async (store) => {
        assert.equal(store.recovery.packsRemoved, 0)
        await assertStored(store, live)
        const again = await store.prune(() => true, { liveShareThreshold: 0.8 })
        assert.is(again.chunksDropped, 0)
        assert.is(again.packsDeleted, 0)
      },
      options,
    )
  })
})

test('a threshold of 0 drops dead chunks but rewrites no pack', async () => {
  await withTempDir(async (directory) => {
    const chunks = seriesChunks('threshold', 20)
    await withStore(directory, async (store) => {
      await putAll(store, chunks)
      await store.flush()
      const bytesBefore = await directoryBytes(join(directory, 'packs'))
      const report = await store.prune((hash) => hash !== chunks[0]!.hash, {
        liveShareThreshold: 0,
      })
      assert.equal(report, { packsRewritten: 0, packsDeleted: 0, chunksDropped: 1, bytesFreed: 0 })
      assert.is(await directoryBytes(join(directory, 'packs')), bytesBefore)
      await assertStored(store, chunks.slice(1))
      assert.not.ok(await store.has(chunks[0]!.hash))
    })
  })
})

test('a store open already cannot be opened a second time', async () => {
  await withTempDir(async (directory) => {
    await withStore(directory, async () => {
      await rejects(ChunkStore.open(directory), 'IO_ERROR', 'open already')
    })
  })
})

test('puts beyond the in-flight bound are refused; the others are stored', async () => {
  await withTempDir(async (directory) => {
    const chunks = Array.from({ length: PUTS_IN_FLIGHT_MAX + 100 }, (_, index) => {
      const bytes = Buffer.from(`tiny chunk ${index}`)
      return { hash: hashChunk(bytes), bytes }
    })
    await withStore(directory, async (store) => {
      const outcomes = await Promise.allSettled(
        chunks.map((chunk) => store.put(chunk.hash, chunk.bytes)),
      )
      const refused = outcomes.filter((outcome) => outcome.status === 'rejected')
      assert.is(refused.length, 100)
      for (const outcome of refused) assert.ok(isClusterError(outcome.reason, 'REFUSED'))
      const stored = chunks.filter((_, index) => outcomes[index]!.status === 'fulfilled')
      await assertStored(store, stored)
      assert.is((await store.stats()).chunks, PUTS_IN_FLIGHT_MAX)
    })
  })
})

test('after close every call fails with CLOSED', async () => {
  await withTempDir(async (directory) => {
    const store = await ChunkStore.open(directory)
    const chunk = seriesChunk('closed', 0)
    await store.close()
    await rejects(store.put(chunk.hash, chunk.bytes), 'CLOSED')
    await rejects(store.get(chunk.hash), 'CLOSED')
    await rejects(store.flush(), 'CLOSED')
    await store.close()
  })
})

test.run()
