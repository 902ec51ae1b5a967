// The node's chunk store as its datasets and replication see it: the same store, except
// that has() and the puts (put() and putHashed()) wait while prune decides which chunks are live and drops the
// others. Without the wait, a put that finds its chunk already stored (and so writes
// nothing), or a has() that answers yes, could be followed by a prune that had not
// counted the chunk as live, and the record they were for would name a chunk that is
// gone. With it, each either ends before the live set is taken or starts after prune has
// finished (and then finds the chunk missing if prune dropped it).
//
// So a chunk a caller put or found before the live set is taken must by then be named by
// a record in a dataset's log (prune indexes every log first: a replica reads records
// before it fetches their chunks), or be put inside a dataset's write queue, which prune
// holds (node-prune.ts): a scan puts its chunks before it appends their records.
import type {
  ChunkHash,
  ChunkStoreApi,
  ChunkStoreStats,
  PruneOptions,
  PruneReport,
} from './chunk-types.ts'
import type { ClusterError } from '../consensus/cluster-error.ts'
import { getEach, isLocalChunkStore, type LocalChunkStore } from './chunk-store.ts'
import type { HashedChunk } from './chunker.ts'
import { ReadGate } from './store-locks.ts'

export type IsLive = (hash: ChunkHash) => boolean

export class GatedChunkStore implements LocalChunkStore {
  readonly store: ChunkStoreApi
  private readonly gate = new ReadGate()

  constructor(store: ChunkStoreApi) {
    this.store = store
  }

  has(hash: ChunkHash): Promise<boolean> {
    return this.gate.read(() => this.store.has(hash))
  }

  put(hash: ChunkHash, bytes: Uint8Array): Promise<boolean> {
    return this.gate.read(() => this.store.put(hash, bytes))
  }

  /** put() of a chunk hashed in this process, when the store beneath takes them; else put(). */
  putHashed(chunk: HashedChunk): Promise<boolean> {
    const store = this.store
    return this.gate.read(() =>
      isLocalChunkStore(store) ? store.putHashed(chunk) : store.put(chunk.hash, chunk.bytes),
    )
  }

  get(hash: ChunkHash): Promise<Uint8Array> {
    return this.store.get(hash)
  }

  getMany(hashes: readonly ChunkHash[]): Promise<(Uint8Array | ClusterError)[]> {
    return isLocalChunkStore(this.store) ? this.store.getMany(hashes) : getEach(this.store, hashes)
  }

  flush(): Promise<void> {
    return this.store.flush()
  }

  prune(isLive: IsLive, options: PruneOptions): Promise<PruneReport> {
    return this.pruneWithLiveSet(async () => isLive, options)
  }

  /** Waits until no put or has runs, holds new ones back, takes the live set and prunes with it. */
  pruneWithLiveSet(liveSet: () => Promise<IsLive>, options: PruneOptions): Promise<PruneReport> {
    return this.gate.exclusive(async () => this.store.prune(await liveSet(), options))
  }

  stats(): Promise<ChunkStoreStats> {
    return this.store.stats()
  }

  close(): Promise<void> {
    return this.store.close()
  }
}
