// The contract between the content chunker, the chunk store and their users (ingest,
// restore, mirrors, prune, and later the network chunk protocol). Chunks are named by
// the SHA-256 of their bytes, as 64 lowercase hex characters.

export type ChunkHash = string & { readonly __brand: 'ChunkHash' }

export const CHUNK_HASH_BYTES = 32

/** Content-defined chunk sizes (FastCDC-style): the chunker never cuts below min or above max. */
export const CHUNK_SIZE_MIN_BYTES = 16 * 1024
export const CHUNK_SIZE_AVERAGE_BYTES = 64 * 1024
export const CHUNK_SIZE_MAX_BYTES = 256 * 1024

export interface Chunk {
  readonly hash: ChunkHash
  readonly bytes: Uint8Array
}

export interface PruneOptions {
  /** A pack whose live bytes fall below this share of its size is rewritten (restic's prune). */
  readonly liveShareThreshold: number
}

export interface PruneReport {
  readonly packsRewritten: number
  readonly packsDeleted: number
  readonly chunksDropped: number
  readonly bytesFreed: number
}

export interface ChunkStoreStats {
  readonly chunks: number
  readonly packs: number
  readonly packBytes: number
  readonly liveBytes: number
}

/** Shared by every dataset on a node, so identical content is stored once. */
export interface ChunkStoreApi {
  has(hash: ChunkHash): Promise<boolean>
  /** Verifies `bytes` against `hash` (HASH_MISMATCH otherwise); appends only if absent. True when newly stored. */
  put(hash: ChunkHash, bytes: Uint8Array): Promise<boolean>
  /** Reads and verifies a chunk: NOT_FOUND if absent, HASH_MISMATCH / CORRUPT_STORE if the bytes are damaged. */
  get(hash: ChunkHash): Promise<Uint8Array>
  /** Makes every earlier put durable: pack bytes synced first, then their index entries written. */
  flush(): Promise<void>
  /** Drops every chunk for which `isLive` is false, rewriting packs whose live share fell below the threshold. */
  prune(isLive: (hash: ChunkHash) => boolean, options: PruneOptions): Promise<PruneReport>
  stats(): Promise<ChunkStoreStats>
  close(): Promise<void>
}
