// The fetching side of the chunk protocol: checks what is wanted, skips what the store
// already holds, and hands the rest to a FetchRun (chunk-fetch-run.ts), which asks the
// sources for it.
import { ClusterError } from '../../consensus/cluster-error.ts'
import {
  CHUNK_SIZE_MAX_BYTES,
  type ChunkHash,
  type ChunkStoreApi,
} from '../../storage/chunk-types.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { FetchRun } from './chunk-fetch-run.ts'

export const CHUNK_SOURCES_MAX = 16
/** Presence checks against the store at once. */
export const PRESENCE_CHECKS_IN_FLIGHT_MAX = 64

const CHUNK_HASH_PATTERN = /^[0-9a-f]{64}$/

export interface WantedChunk {
  readonly hash: ChunkHash
  readonly length: number
}

export interface FetchProgress {
  readonly chunksFetched: number
  readonly bytesFetched: number
  readonly chunksToFetch: number
  readonly bytesToFetch: number
}

export interface FetchResult {
  /** Chunks fetched and stored (durably) by this call. */
  readonly fetched: number
  readonly bytes: number
  /** Wanted chunks the store already held. */
  readonly present: number
  /** Chunks no source provided. */
  readonly failed: ChunkHash[]
}

export interface FetchOptions {
  readonly signal?: AbortSignal
  readonly onProgress?: (progress: FetchProgress) => void
}

export interface ChunkFetcherOptions {
  readonly node: P2pNode
  readonly chunkStore: Pick<ChunkStoreApi, 'has' | 'put' | 'flush'>
  readonly log?: (line: string) => void
  /** For tests of stalls; CHUNK_RESPONSE_TIMEOUT_MS by default. */
  readonly responseTimeoutMs?: number
}

export class ChunkFetcher {
  readonly #options: ChunkFetcherOptions

  constructor(options: ChunkFetcherOptions) {
    this.#options = options
  }

  /** Fetches the wanted chunks that the store lacks from `sources` (peer ids, best first). */
  async fetch(
    wanted: readonly WantedChunk[],
    sources: readonly string[],
    options: FetchOptions = {},
  ): Promise<FetchResult> {
    const unique = uniqueChunks(wanted)
    const missing = await this.#missingFrom(unique)
    const peers = [...new Set(sources)].filter((peer) => peer !== this.#options.node.peerId)
    if (peers.length > CHUNK_SOURCES_MAX)
      throw ClusterError.badArgument(`at most ${CHUNK_SOURCES_MAX} chunk sources`)
    const run = new FetchRun(this.#options, missing, peers, options)
    const result = await run.execute()
    return { ...result, present: unique.length - missing.length }
  }

  async #missingFrom(chunks: readonly WantedChunk[]): Promise<WantedChunk[]> {
    const missing: WantedChunk[] = []
    for (let start = 0; start < chunks.length; start += PRESENCE_CHECKS_IN_FLIGHT_MAX) {
      const batch = chunks.slice(start, start + PRESENCE_CHECKS_IN_FLIGHT_MAX)
      const present = await Promise.all(
        batch.map((chunk) => this.#options.chunkStore.has(chunk.hash)),
      )
      for (const [index, chunk] of batch.entries()) if (!present[index]) missing.push(chunk)
    }
    return missing
  }
}

function uniqueChunks(wanted: readonly WantedChunk[]): WantedChunk[] {
  const byHash = new Map<ChunkHash, WantedChunk>()
  for (const chunk of wanted) {
    if (!CHUNK_HASH_PATTERN.test(chunk.hash))
      throw ClusterError.badArgument(`not a chunk hash: ${chunk.hash}`)
    if (!(
      Number.isSafeInteger(chunk.length) &&
      chunk.length > 0 &&
      chunk.length <= CHUNK_SIZE_MAX_BYTES
    ))
      throw ClusterError.badArgument(`chunk ${chunk.hash} has a bad length ${chunk.length}`)
    const seen = byHash.get(chunk.hash)
    if (seen !== undefined && seen.length !== chunk.length)
      throw ClusterError.badArgument(`chunk ${chunk.hash} is wanted with two lengths`)
    byHash.set(chunk.hash, chunk)
  }
  return [...byHash.values()]
}
