// ReplicaSync over a real version log and real chunk stores: rounds bounded by records and
// bytes, every chunk the log names stored before its records are declared complete, rounds
// declared complete in log order even when a later one finishes first, and a round that
// lacked a chunk retried until the chunk can be had. The chunks come from the master's
// store through a ChunkFetch that reads it directly (the chunk protocol has its own tests);
// a source that lacks a chunk is a real absence: those chunks are withheld until released.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  ReplicaSync,
  SYNC_BYTES_PER_ROUND_MAX,
  SYNC_RECORDS_PER_ROUND_MAX,
  type ChunkFetch,
  type ChunkFetchProgress,
  type WantedChunk,
} from '../../node/replication/replica-sync.ts'
import { ChunkStore } from '../../storage/chunk-store.ts'
import { chunkBytes } from '../../storage/chunker.ts'
import type { ChunkHash, ChunkStoreApi } from '../../storage/chunk-types.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { logSeq, type DatasetPath } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { contentBytes, writeDatasetFile } from '../storage/fixtures/dataset-tree.ts'

const MiB = 1024 * 1024
const path = (text: string): DatasetPath => text as DatasetPath
const WAIT_MS_MAX = 30_000

/** Fetches from another node's chunk store on this machine; withheld chunks are missing there. */
class LocalFetch implements ChunkFetch {
  readonly withheld = new Set<ChunkHash>()
  calls = 0
  readonly #source: ChunkStoreApi
  readonly #target: ChunkStoreApi

  constructor(source: ChunkStoreApi, target: ChunkStoreApi) {
    this.#source = source
    this.#target = target
  }

  async fetch(
    wanted: readonly WantedChunk[],
    _sources: readonly string[],
    options: { signal: AbortSignal; onProgress: (progress: ChunkFetchProgress) => void },
  ): Promise<{ fetched: number; bytes: number; failed: ChunkHash[] }> {
    this.calls++
    const missing: WantedChunk[] = []
    for (const chunk of wanted) if (!(await this.#target.has(chunk.hash))) missing.push(chunk)
    const bytesToFetch = missing.reduce((sum, chunk) => sum + chunk.length, 0)
    const failed: ChunkHash[] = []
    let fetched = 0
    let bytes = 0
    for (const chunk of missing) {
      options.signal.throwIfAborted()
      if (this.withheld.has(chunk.hash)) {
        failed.push(chunk.hash)
        continue
      }
      await this.#target.put(chunk.hash, await this.#source.get(chunk.hash))
      fetched++
      bytes += chunk.length
      options.onProgress({ bytesFetched: bytes, bytesToFetch })
    }
    await this.#target.flush()
    return { fetched, bytes, failed }
  }
}

interface Setup {
  readonly root: string
  readonly dataset: Dataset
  /** The master's chunk store. */
  readonly source: ChunkStoreApi
  readonly target: ChunkStoreApi
  readonly fetch: LocalFetch
  /** Every length the sync declared complete, in the order it did. */
  readonly completed: number[]
  readonly warnings: string[]
  readonly sync: ReplicaSync
}

/** A master's dataset of `files`, a replica's chunk store, and a sync between them, running. */
async function withSync(
  files: (root: string) => Promise<void>,
  body: (setup: Setup) => Promise<void>,
): Promise<void> {
  await withTempDir(async (directory) => {
    const root = join(directory, 'set')
    await files(root)
    const store = await NodeStore.open(join(directory, 'master'))
    const target = await ChunkStore.open(join(directory, 'replica-chunks'))
    const running = new AbortController()
    let syncing: Promise<void> = Promise.resolve()
    try {
      const dataset = await store.ownDataset('dataset')
      const fetch = new LocalFetch(store.chunkStore, target)
      const completed: number[] = []
      const warnings: string[] = []
      // The sync reads the master's own log: a replica's copy is the same interface.
      const sync = new ReplicaSync({
        log: dataset.log,
        fetcher: fetch,
        sources: () => ['master'],
        onComplete: (length) => completed.push(length),
        onWarning: (message) => warnings.push(message),
      })
      syncing = sync.run(running.signal)
      await body({
        root,
        dataset,
        source: store.chunkStore,
        target,
        fetch,
        completed,
        warnings,
        sync,
      })
    } finally {
      running.abort()
      await syncing
      await target.close()
      await store.close()
    }
  })
}

async function waitUntil(what: string, check: () => boolean): Promise<void> {
  for (let waitedMs = 0; !check(); waitedMs += 10) {
    assert.ok(waitedMs < WAIT_MS_MAX, `timed out waiting for ${what}`)
    await sleep(10)
  }
}

/** Every chunk the log's records name. */
async function namedChunks(dataset: Dataset): Promise<Set<ChunkHash>> {
  const hashes = new Set<ChunkHash>()
  for (let seq = 0; seq < dataset.log.length; seq++) {
    const record = await dataset.log.read(logSeq(seq))
    if (record.kind === 'put' || record.kind === 'chunks')
      for (const chunk of record.chunks) hashes.add(chunk.hash)
  }
  return hashes
}

function assertIncreasing(lengths: readonly number[]): void {
  for (let index = 1; index < lengths.length; index++)
    assert.ok(lengths[index]! > lengths[index - 1]!, `completed lengths increase: ${lengths}`)
}

test('many records: rounds of at most the record bound, each complete only with its chunks, in order, live as the log grows', () =>
  withSync(
    async (root) => {
      for (let index = 0; index < SYNC_RECORDS_PER_ROUND_MAX + 100; index++)
        await writeDatasetFile(root, `d${index % 10}/f${index}.txt`, `file ${index}\n`)
    },
    async ({ root, dataset, target, completed, sync }) => {
      await dataset.scan(root)
      await waitUntil('the whole log', () => sync.completeLength === dataset.log.length)
      assertIncreasing(completed)
      assert.ok(completed.length >= 2, 'more than one round')
      for (const [index, length] of completed.entries())
        assert.ok(length - (completed[index - 1] ?? 0) <= SYNC_RECORDS_PER_ROUND_MAX)
      for (const hash of await namedChunks(dataset)) assert.ok(await target.has(hash))
      assert.is(sync.bytesPending, 0)

      // Live: what the master records next is followed too.
      await writeDatasetFile(root, 'late.txt', 'late\n')
      await dataset.scan(root)
      await waitUntil('the new record', () => sync.completeLength === dataset.log.length)
      assert.ok(await target.has([...(await namedChunks(dataset))].at(-1)!))
    },
  ))

test('a round that lacks a chunk is retried until it can be had; a later round that finished first waits its turn', () => {
  // Two files whose bytes together pass the per-round bound: two rounds.
  const fileBytes = Math.ceil((SYNC_BYTES_PER_ROUND_MAX * 0.6) / MiB) * MiB
  const a = contentBytes('a', fileBytes)
  const b = contentBytes('b', fileBytes)
  return withSync(
    async (root) => {
      await writeDatasetFile(root, 'a.bin', a)
      await writeDatasetFile(root, 'b.bin', b)
    },
    async ({ root, dataset, target, fetch, completed, warnings, sync }) => {
      // The source lacks a.bin's last chunk for now.
      fetch.withheld.add(chunkBytes(a).at(-1)!.hash)
      await dataset.scan(root)
      const aEnd = (await dataset.reader.fileVersion(path('a.bin'))).seq + 1
      const lastOfB = chunkBytes(b).at(-1)!.hash
      for (let waitedMs = 0; !(await target.has(lastOfB)); waitedMs += 10) {
        assert.ok(waitedMs < WAIT_MS_MAX, 'b.bin is fetched')
        await sleep(10)
      }
      await waitUntil('a failed attempt', () => warnings.length > 0)
      assert.match(warnings[0]!, /could not be fetched/)
      // b.bin's round finished, but nothing from a.bin's record on is declared complete.
      assert.ok(sync.completeLength < aEnd, `complete ${sync.completeLength} stays before ${aEnd}`)

      fetch.withheld.clear()
      await waitUntil('the whole log', () => sync.completeLength === dataset.log.length)
      assertIncreasing(completed)
      for (const hash of await namedChunks(dataset)) assert.ok(await target.has(hash))
    },
  )
})

test('a sync that starts at a complete length looks at nothing before it', () =>
  withSync(
    async (root) => writeDatasetFile(root, 'old.bin', contentBytes('old', MiB)),
    async ({ root, dataset, source }) => {
      await dataset.scan(root)
      const startLength = dataset.log.length
      await withTempDir(async (directory) => {
        const target = await ChunkStore.open(join(directory, 'restarted-chunks'))
        const running = new AbortController()
        const fetch = new LocalFetch(source, target)
        const sync = new ReplicaSync({
          log: dataset.log,
          fetcher: fetch,
          sources: () => ['master'],
          startLength,
          onComplete: () => undefined,
          onWarning: () => undefined,
        })
        const syncing = sync.run(running.signal)
        try {
          assert.is(sync.completeLength, startLength)
          const fresh = contentBytes('new', MiB)
          await writeDatasetFile(root, 'new.bin', fresh)
          await dataset.scan(root)
          await waitUntil('the new record', () => sync.completeLength === dataset.log.length)
          for (const chunk of chunkBytes(fresh)) assert.ok(await target.has(chunk.hash))
          // The records before the start (what retention may have dropped) are not fetched.
          for (const chunk of chunkBytes(contentBytes('old', MiB)))
            assert.not.ok(await target.has(chunk.hash))
        } finally {
          running.abort()
          await syncing
          await target.close()
        }
      })
    },
  ))

test('a patch record is complete only when the replica holds every chunk of the patched version', () => {
  const big = contentBytes('big', 8 * MiB)
  return withSync(
    async (root) => writeDatasetFile(root, 'big.bin', big),
    async ({ root, dataset, target, sync }) => {
      await dataset.scan(root)
      await waitUntil('the first version', () => sync.completeLength === dataset.log.length)
      // Retention here dropped two chunks of the first version that the next one keeps.
      const dropped = new Set(
        chunkBytes(big)
          .slice(0, 2)
          .map((chunk) => chunk.hash),
      )
      await (target as ChunkStore).prune((hash) => !dropped.has(hash), {
        liveShareThreshold: 1,
      })
      for (const hash of dropped) assert.not.ok(await target.has(hash))
      // A small change in the middle: recorded as a patch of the put before.
      const changed = Buffer.from(big)
      changed.fill(7, 4 * MiB, 4 * MiB + 4096)
      await writeDatasetFile(root, 'big.bin', changed, { mtimeMs: Date.UTC(2024, 0, 2) })
      await dataset.scan(root)
      const patch = await dataset.log.read(logSeq(dataset.log.length - 1))
      assert.is(patch.kind, 'patch')
      await waitUntil('the patch', () => sync.completeLength === dataset.log.length)
      for (const chunk of chunkBytes(changed)) assert.ok(await target.has(chunk.hash))
    },
  )
})

test.run()
