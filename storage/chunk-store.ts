// The node's deduplicating chunk store: chunks named by their SHA-256, appended to pack
// files (pack-format.ts) and found through an index in classic-level (chunk-index.ts).
//
// Durability: put() appends to a write buffer and is visible at once to has() and get()
// of this process; flush() syncs the packs, then writes their index entries in one
// batch. That batch need not be synced itself: records past a pack's indexed end are
// found and indexed again on open (pack-recovery.ts), so a lost batch loses nothing.
// Prune's batches are synced, because an old pack is deleted after them.
//
// Concurrency: puts may run concurrently; appends and syncs run one at a time on the
// write queue; flush and prune run one at a time on their own queue; reads run
// alongside writes and wait only while prune deletes pack files.
//
// Errors: a failed write or sync of a pack, or of the index, leaves the store in a state
// only a reopen can trust, so every later call fails until then (IO_ERROR).
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError, type ClusterErrorCode } from '../consensus/cluster-error.ts'
import {
  CHUNK_SIZE_MAX_BYTES,
  type ChunkHash,
  type ChunkStoreApi,
  type ChunkStoreStats,
  type PruneOptions,
  type PruneReport,
} from './chunk-types.ts'
import { ChunkIndex } from './chunk-index.ts'
import { isHashedChunk, type HashedChunk } from './chunker.ts'
import { PackAppender, packCall, type PackSize } from './pack-file.ts'
import {
  RECORD_BYTES_MAX,
  recordEnd,
  sha256,
  verifyRecord,
  type RecordLocation,
} from './pack-format.ts'
import { PackReaders } from './pack-readers.ts'
import { checkPruneOptions, prunePacks, type PruneContext } from './pack-prune.ts'
import {
  deletePackFiles,
  emptyPackRecord,
  recoverPacks,
  type ChunkStoreRecovery,
  type PackState,
  type RecoveredPacks,
} from './pack-recovery.ts'
import { ReadGate, SerialQueue } from './store-locks.ts'

/** A pack rolls over to a new one before it would grow past this. */
export const PACK_SIZE_BYTES_MAX = 64 * 1024 * 1024
/** Puts accepted at once (each holds its caller's bytes until written). */
export const PUTS_IN_FLIGHT_MAX = 4096
/** Unflushed chunks: a put that reaches this flushes, so memory and replay stay bounded. */
export const PENDING_CHUNKS_MAX = 16_384
/** Chunks one getMany() reads: at most 16 MiB of the largest chunks. */
export const GET_MANY_CHUNKS_MAX = 64

export interface ChunkStoreOptions {
  /** For tests: smaller packs roll over and get pruned sooner. */
  readonly packSizeBytesMax?: number
}

const CHUNK_HASH_PATTERN = /^[0-9a-f]{64}$/

function packsDirectoryOf(directory: string): string {
  return join(directory, 'packs')
}

/**
 * What the node's own stores add to ChunkStoreApi, for the ingest and for restores: they
 * take chunks hashed in this process without hashing them again, and read many at once.
 */
export interface LocalChunkStore extends ChunkStoreApi {
  putHashed(chunk: HashedChunk): Promise<boolean>
  getMany(hashes: readonly ChunkHash[]): Promise<(Uint8Array | ClusterError)[]>
}

/** Whether `store` is one of the node's own (others get put() and get() only). */
export function isLocalChunkStore(store: ChunkStoreApi): store is LocalChunkStore {
  const local = store as Partial<LocalChunkStore>
  return typeof local.putHashed === 'function' && typeof local.getMany === 'function'
}

/** Errors of one chunk, which getMany() gives in its place rather than throwing. */
const GIVEN_IN_PLACE: readonly ClusterErrorCode[] = ['NOT_FOUND', 'HASH_MISMATCH', 'CORRUPT_STORE']

/** getMany() of a store that has only get(): one get() per chunk. */
export function getEach(
  store: ChunkStoreApi,
  hashes: readonly ChunkHash[],
): Promise<(Uint8Array | ClusterError)[]> {
  return Promise.all(
    hashes.map((hash) =>
      store.get(hash).catch((error: unknown) => {
        if (isClusterError(error) && GIVEN_IN_PLACE.includes(error.code)) return error
        throw error
      }),
    ),
  )
}

export class ChunkStore implements LocalChunkStore {
  readonly directory: string
  /** What opening had to repair. */
  readonly recovery: ChunkStoreRecovery
  private readonly packsDirectory: string
  private readonly packSizeBytesMax: number
  private readonly index: ChunkIndex
  private readonly packs: Map<number, PackState>
  private readonly appender: PackAppender
  private readonly readers: PackReaders
  private readonly writes = new SerialQueue()
  private readonly flushes = new SerialQueue()
  private readonly gate = new ReadGate()
  /** Appended, not yet in the index: found here first. */
  private readonly pending = new Map<ChunkHash, RecordLocation>()
  private readonly inFlight = new Map<ChunkHash, Promise<boolean>>()
  private nextPackId: number
  private closing = false
  private failure: ClusterError | null = null

  private constructor(
    directory: string,
    packSizeBytesMax: number,
    index: ChunkIndex,
    recovered: RecoveredPacks,
  ) {
    this.directory = directory
    this.packsDirectory = packsDirectoryOf(directory)
    this.packSizeBytesMax = packSizeBytesMax
    this.index = index
    this.packs = recovered.packs
    this.recovery = recovered.report
    this.nextPackId = recovered.nextPackId
    this.appender = new PackAppender(this.packsDirectory, packSizeBytesMax, () => this.nextPackId++)
    this.readers = new PackReaders(this.packsDirectory)
  }

  /** Opens (creating if needed) the store in `directory`, repairing what a crash left. */
  static async open(directory: string, options: ChunkStoreOptions = {}): Promise<ChunkStore> {
    const packSizeBytesMax = options.packSizeBytesMax ?? PACK_SIZE_BYTES_MAX
    if (!(Number.isSafeInteger(packSizeBytesMax) && packSizeBytesMax >= RECORD_BYTES_MAX)) {
      throw ClusterError.badArgument(`packSizeBytesMax must be at least ${RECORD_BYTES_MAX}`)
    }
    const packsDirectory = packsDirectoryOf(directory)
    await packCall(packsDirectory, 'create', () => mkdir(packsDirectory, { recursive: true }))
    const index = await ChunkIndex.open(join(directory, 'index'))
    try {
      const recovered = await recoverPacks(index, packsDirectory)
      const store = new ChunkStore(directory, packSizeBytesMax, index, recovered)
      const newest =
        recovered.newestPack === null ? null : recovered.packs.get(recovered.newestPack)
      if (newest && newest.sizeBytes < packSizeBytesMax) {
        await store.appender.resume({ packId: newest.record.packId, sizeBytes: newest.sizeBytes })
      }
      return store
    } catch (error) {
      await index.close().catch(() => undefined)
      throw error
    }
  }

  async has(hash: ChunkHash): Promise<boolean> {
    const hashBytes = this.checkHash(hash)
    if (this.pending.has(hash)) return true
    return (await this.index.get(hashBytes)) !== undefined
  }

  /** `bytes` must not change until the returned promise settles. */
  async put(hash: ChunkHash, bytes: Uint8Array): Promise<boolean> {
    const hashBytes = this.checkChunk(hash, bytes)
    const actual = sha256(bytes)
    if (!actual.equals(hashBytes)) {
      throw ClusterError.hashMismatch(
        `refused chunk ${hash}: its bytes hash to ${actual.toString('hex')}`,
      )
    }
    return this.putChecked(hash, hashBytes, bytes)
  }

  /**
   * put() for a chunk this process has just hashed (an ingest's): the bytes are not hashed
   * again. Chunks from elsewhere (a peer's, above all) go through put(), which verifies.
   */
  async putHashed(chunk: HashedChunk): Promise<boolean> {
    assert(isHashedChunk(chunk), 'putHashed() takes only chunks hashed in this process')
    return this.putChecked(chunk.hash, this.checkChunk(chunk.hash, chunk.bytes), chunk.bytes)
  }

  async get(hash: ChunkHash): Promise<Uint8Array> {
    const [result] = await this.getMany([hash])
    if (result instanceof ClusterError) throw result
    return result!
  }

  /**
   * get() of up to GET_MANY_CHUNKS_MAX chunks at once, each read and verified as get()
   * reads it, with the index looked up in one batch and records that lie one after
   * another in a pack read together. A chunk that cannot be given has its error
   * (NOT_FOUND, HASH_MISMATCH, CORRUPT_STORE) in its place; a failure of the store itself
   * is thrown. Each result may be kept: none shares memory with a later call.
   */
  async getMany(hashes: readonly ChunkHash[]): Promise<(Uint8Array | ClusterError)[]> {
    if (hashes.length > GET_MANY_CHUNKS_MAX)
      throw ClusterError.badArgument(`getMany() takes at most ${GET_MANY_CHUNKS_MAX} chunks`)
    const hashBytes = hashes.map((hash) => this.checkHash(hash))
    return this.gate.read(async () => {
      const locations = await Promise.all(
        hashes.map((hash, index) => this.pending.get(hash) ?? this.index.get(hashBytes[index]!)),
      )
      const results: (Uint8Array | ClusterError)[] = []
      const inPacks: { position: number; location: RecordLocation }[] = []
      locations.forEach((location, position) => {
        const hash = hashes[position]!
        if (location === undefined)
          results[position] = ClusterError.notFound(`chunk ${hash} is not stored`)
        else {
          const buffered = this.appender.readBuffered(location)
          if (buffered === null) inPacks.push({ position, location })
          else results[position] = verifiedPayload(buffered, hash, location)
        }
      })
      const records = await this.readers.readRecords(inPacks.map((each) => each.location))
      inPacks.forEach(({ position, location }, index) => {
        const hash = hashes[position]!
        const record = records[index]!
        results[position] =
          record instanceof ClusterError
            ? ClusterError.corruptStore(`chunk ${hash}: ${record.message}`, record)
            : verifiedPayload(record, hash, location)
      })
      return results
    })
  }

  async flush(): Promise<void> {
    this.checkUsable()
    await this.flushes.run(() => this.flushLocked())
  }

  /**
   * `isLive` must also hold for any chunk put while prune runs or just before: a put that
   * found its chunk already stored returns false, and prune may then drop that chunk.
   */
  async prune(isLive: (hash: ChunkHash) => boolean, options: PruneOptions): Promise<PruneReport> {
    this.checkUsable()
    checkPruneOptions(options)
    return this.flushes.run(() =>
      this.writes.run(async () => {
        this.checkUsable()
        await this.indexAppended(await this.syncAppended())
        return this.guard(() => prunePacks(this.pruneContext(), isLive, options))
      }),
    )
  }

  async stats(): Promise<ChunkStoreStats> {
    this.checkUsable()
    let chunks = this.pending.size
    let liveBytes = 0
    let packBytes = 0
    for (const location of this.pending.values()) liveBytes += location.lengthBytes
    for (const { record, sizeBytes } of this.packs.values()) {
      chunks += record.chunkCount
      liveBytes += record.chunkBytes
      packBytes += sizeBytes
    }
    return { chunks, packs: this.packs.size, packBytes, liveBytes }
  }

  /** Flushes, then releases every file; later calls fail with CLOSED. */
  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    try {
      if (this.failure === null) {
        await this.flushes.run(() => this.flushLocked())
        await this.writes.run(() => this.appender.seal())
      }
    } finally {
      await this.appender.abandon()
      await this.gate.exclusive(() => this.readers.closeAll())
      await this.index.close()
    }
  }

  /** Stores a chunk whose bytes are known to match its hash, unless it is stored already. */
  private async putChecked(
    hash: ChunkHash,
    hashBytes: Buffer,
    bytes: Uint8Array,
  ): Promise<boolean> {
    if (this.pending.has(hash)) return false
    const running = this.inFlight.get(hash)
    if (running !== undefined) return running.then(() => false)
    if (this.inFlight.size >= PUTS_IN_FLIGHT_MAX) {
      throw ClusterError.refused(
        `chunk store: ${PUTS_IN_FLIGHT_MAX} puts are already in flight; await some first`,
      )
    }
    const storing = this.storeIfAbsent(hash, hashBytes, bytes)
    this.inFlight.set(hash, storing)
    try {
      return await storing
    } finally {
      this.inFlight.delete(hash)
    }
  }

  private async storeIfAbsent(
    hash: ChunkHash,
    hashBytes: Buffer,
    bytes: Uint8Array,
  ): Promise<boolean> {
    if ((await this.index.get(hashBytes)) !== undefined) return false
    await this.writes.run(async () => {
      this.checkUsable()
      const location = await this.guard(() => this.appender.append(hashBytes, bytes))
      this.pending.set(hash, location)
      const state = this.packState(location.packId)
      state.sizeBytes = Math.max(state.sizeBytes, recordEnd(location))
    })
    if (this.pending.size >= PENDING_CHUNKS_MAX) await this.flush()
    return true
  }

  private async flushLocked(): Promise<void> {
    await this.indexAppended(await this.writes.run(() => this.syncAppended()))
  }

  /** On the write queue: makes the packs durable and takes what is to be indexed. */
  private async syncAppended(): Promise<AppendedSince> {
    const synced = await this.guard(() => this.appender.sync())
    return { synced, appended: [...this.pending] }
  }

  /** Writes the index entries of synced records, with their packs' records, in one batch. */
  private async indexAppended({ synced, appended }: AppendedSince): Promise<void> {
    const added = new Map<number, { chunkCount: number; chunkBytes: number }>()
    for (const [, location] of appended) {
      const counts = added.get(location.packId) ?? { chunkCount: 0, chunkBytes: 0 }
      counts.chunkCount++
      counts.chunkBytes += location.lengthBytes
      added.set(location.packId, counts)
    }
    const records = synced.map(({ packId, sizeBytes }) => {
      const record = this.packState(packId).record
      const counts = added.get(packId)
      added.delete(packId)
      return {
        ...record,
        indexedEndBytes: sizeBytes,
        chunkCount: record.chunkCount + (counts?.chunkCount ?? 0),
        chunkBytes: record.chunkBytes + (counts?.chunkBytes ?? 0),
      }
    })
    assert(added.size === 0, 'every appended record is in a pack that was just synced')
    const putChunks = appended.map(
      ([hash, location]) => [Buffer.from(hash, 'hex'), location] as const,
    )
    await this.guard(() => this.index.write({ putChunks, putPacks: records }, { sync: false }))
    for (const record of records) this.packState(record.packId).record = record
    for (const [hash, location] of appended) {
      if (this.pending.get(hash) === location) this.pending.delete(hash)
    }
  }

  private pruneContext(): PruneContext {
    return {
      index: this.index,
      packsDirectory: this.packsDirectory,
      packSizeBytesMax: this.packSizeBytesMax,
      packs: this.packs,
      allocatePackId: () => this.nextPackId++,
      releasePacks: async (packIds) => {
        const current = this.appender.currentPackId
        if (current !== null && packIds.has(current)) await this.appender.seal()
      },
      deletePacks: async (packIds) => {
        await this.gate.exclusive(async () => {
          await this.readers.forget(packIds)
          await deletePackFiles(this.packsDirectory, packIds)
        })
        await this.index.write({ deletePacks: packIds }, { sync: false })
        for (const packId of packIds) this.packs.delete(packId)
      },
    }
  }

  private packState(packId: number): PackState {
    let state = this.packs.get(packId)
    if (state === undefined) {
      state = { record: emptyPackRecord(packId), sizeBytes: 0 }
      this.packs.set(packId, state)
    }
    return state
  }

  /** Checks a chunk's name and size before it is stored; returns its hash as bytes. */
  private checkChunk(hash: ChunkHash, bytes: Uint8Array): Buffer {
    const hashBytes = this.checkHash(hash)
    if (bytes.length > CHUNK_SIZE_MAX_BYTES) {
      throw ClusterError.badArgument(
        `chunk ${hash} has ${bytes.length} bytes, more than the ${CHUNK_SIZE_MAX_BYTES} allowed`,
      )
    }
    return hashBytes
  }

  private checkHash(hash: ChunkHash): Buffer {
    this.checkUsable()
    if (typeof hash !== 'string' || !CHUNK_HASH_PATTERN.test(hash)) {
      throw ClusterError.badArgument(`not a chunk hash (64 lowercase hex digits): ${String(hash)}`)
    }
    return Buffer.from(hash, 'hex')
  }

  private checkUsable(): void {
    if (this.closing) throw ClusterError.closed(`the chunk store in ${this.directory} is closed`)
    if (this.failure !== null) {
      throw ClusterError.io(
        `the chunk store in ${this.directory} must be reopened after an error: ${this.failure.message}`,
        this.failure,
      )
    }
  }

  /** Runs a step that changes files or the index; if it fails on I/O, the store stops. */
  private async guard<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step()
    } catch (error) {
      if (isClusterError(error, 'IO_ERROR')) this.failure ??= error
      throw error
    }
  }
}

/** A record's payload once verified, or why it cannot be given. */
function verifiedPayload(
  record: Buffer,
  hash: ChunkHash,
  location: RecordLocation,
): Buffer | ClusterError {
  try {
    return verifyRecord(record, hash, location)
  } catch (error) {
    if (isClusterError(error)) return error
    throw error
  }
}

interface AppendedSince {
  readonly synced: readonly PackSize[]
  readonly appended: readonly (readonly [ChunkHash, RecordLocation])[]
}
