// A replica's side of one dataset: the log core arrives by Hypercore replication (which
// verifies the master's signature); this loop walks the new records, fetches the chunks
// they name that this node lacks — from the master or any other holder, each verified
// against the signed hash — and only then declares the records complete, so that the
// index, the mirror and the lag report never get ahead of the bytes.
import { setTimeout as sleep } from 'node:timers/promises'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash, ChunkStoreApi } from '../../storage/chunk-types.ts'
import type { VersionLogReader } from '../../storage/version-log.ts'
import { logSeq, type ChunkReference } from '../../storage/version-record.ts'

/** Records examined per round: bounds the memory for one round's chunk list. */
export const SYNC_RECORDS_PER_ROUND_MAX = 512
/** Chunks fetched per round (a 256 MiB file is about 4,000 chunks). */
export const SYNC_CHUNKS_PER_ROUND_MAX = 16_384
const RETRY_DELAY_MS_MIN = 200
const RETRY_DELAY_MS_MAX = 10_000

export interface WantedChunk {
  readonly hash: ChunkHash
  readonly length: number
}

export interface ChunkFetch {
  fetch(
    wanted: readonly WantedChunk[],
    sources: readonly string[],
    options: { signal: AbortSignal },
  ): Promise<{
    readonly fetched: number
    readonly bytes: number
    readonly failed: readonly ChunkHash[]
  }>
}

export interface ReplicaSyncOptions {
  readonly log: VersionLogReader
  readonly chunkStore: ChunkStoreApi
  readonly fetcher: ChunkFetch
  /** Peers that may hold the chunks, best first (the master, then the other replicas). */
  readonly sources: () => readonly string[]
  /** Told each time more records are complete (index them, update the mirror). */
  readonly onComplete: (length: number) => Promise<void>
  readonly onWarning: (message: string) => void
}

export class ReplicaSync {
  readonly #options: ReplicaSyncOptions
  #completeLength = 0
  #bytesPending = 0
  #bytesFetched = 0

  constructor(options: ReplicaSyncOptions) {
    this.#options = options
  }

  /** Records held here with every chunk they name. */
  get completeLength(): number {
    return this.#completeLength
  }

  /** Bytes of the current round still to fetch (what `status` shows as lag beyond the log). */
  get bytesPending(): number {
    return this.#bytesPending
  }

  get bytesFetched(): number {
    return this.#bytesFetched
  }

  /** Runs until `signal` aborts or the log closes. */
  async run(signal: AbortSignal): Promise<void> {
    const { log } = this.#options
    let retryDelayMs = RETRY_DELAY_MS_MIN
    while (!signal.aborted) {
      try {
        if (this.#completeLength >= log.length)
          await log.waitForLength(this.#completeLength + 1, signal)
        const end = Math.min(log.length, this.#completeLength + SYNC_RECORDS_PER_ROUND_MAX)
        const { missing, recordsEnd } = await this.#missingChunks(this.#completeLength, end)
        this.#bytesPending = missing.reduce((sum, chunk) => sum + chunk.length, 0)
        if (missing.length > 0) {
          const result = await this.#options.fetcher.fetch(missing, this.#options.sources(), {
            signal,
          })
          this.#bytesFetched += result.bytes
          if (result.failed.length > 0) {
            this.#options.onWarning(
              `${result.failed.length} chunk(s) could not be fetched from ${this.#options.sources().length} source(s); retrying in ${retryDelayMs} ms`,
            )
            await sleep(retryDelayMs, undefined, { signal })
            retryDelayMs = Math.min(RETRY_DELAY_MS_MAX, retryDelayMs * 2)
            continue
          }
        }
        retryDelayMs = RETRY_DELAY_MS_MIN
        this.#bytesPending = 0
        this.#completeLength = recordsEnd
        await this.#options.onComplete(recordsEnd)
      } catch (error) {
        if (signal.aborted || isClusterError(error, 'CLOSED')) return
        this.#options.onWarning(
          `replica sync: ${(error as Error).message}; retrying in ${retryDelayMs} ms`,
        )
        await sleep(retryDelayMs, undefined, { signal }).catch(() => undefined)
        retryDelayMs = Math.min(RETRY_DELAY_MS_MAX, retryDelayMs * 2)
      }
    }
  }

  /** The chunks records [start, end) name that the store lacks; stops early at the per-round chunk bound. */
  async #missingChunks(
    start: number,
    end: number,
  ): Promise<{ missing: WantedChunk[]; recordsEnd: number }> {
    const { log, chunkStore } = this.#options
    const seen = new Set<ChunkHash>()
    const missing: WantedChunk[] = []
    for (let seq = start; seq < end; seq++) {
      const record = await log.read(logSeq(seq))
      const chunks: readonly ChunkReference[] =
        record.kind === 'put' || record.kind === 'chunks' ? record.chunks : []
      if (seen.size + chunks.length > SYNC_CHUNKS_PER_ROUND_MAX && seq > start)
        return { missing, recordsEnd: seq }
      for (const chunk of chunks) {
        if (seen.has(chunk.hash)) continue
        seen.add(chunk.hash)
        if (!(await chunkStore.has(chunk.hash)))
          missing.push({ hash: chunk.hash, length: chunk.lengthBytes })
      }
    }
    return { missing, recordsEnd: end }
  }
}
