// The node's chunk store as its datasets see it: the same store, except that a put waits
// while prune decides which chunks are live and drops the others. Without the wait, a put
// that finds its chunk already stored (and so writes nothing) could be followed by a
// prune that had not counted the chunk as live, and the record naming it would then name
// a chunk that is gone. With it, every put either ends before the live set is taken or
// starts after prune has finished (and stores the chunk again if prune dropped it).
//
// What a put made before the live set is taken must be named by then by an indexed
// record, or be made inside a dataset's write queue, which prune holds (node-prune.ts).
import type {
  ChunkHash,
  ChunkStoreApi,
  ChunkStoreStats,
  PruneOptions,
  PruneReport,
} from './chunk-types.ts'
import { ReadGate } from './store-locks.ts'

export type IsLive = (hash: ChunkHash) => boolean

export class GatedChunkStore implements ChunkStoreApi {
  readonly store: ChunkStoreApi
  private readonly gate = new ReadGate()

  constructor(store: ChunkStoreApi) {
    this.store = store
  }

  has(hash: ChunkHash): Promise<boolean> {
    return this.store.has(hash)
  }

  put(hash: ChunkHash, bytes: Uint8Array): Promise<boolean> {
    return this.gate.read(() => this.store.put(hash, bytes))
  }

  get(hash: ChunkHash): Promise<Uint8Array> {
    return this.store.get(hash)
  }

  flush(): Promise<void> {
    return this.store.flush()
  }

  prune(isLive: IsLive, options: PruneOptions): Promise<PruneReport> {
    return this.pruneWithLiveSet(async () => isLive, options)
  }

  /** Waits until no put runs, holds new puts back, takes the live set and prunes with it. */
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
