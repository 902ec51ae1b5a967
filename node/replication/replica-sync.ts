// A replica's side of one dataset: the log core arrives by Hypercore replication (which
// verifies the master's signature); this loop walks the new records in rounds, fetches the
// chunks they name that this node lacks — from the master or any other holder, each
// verified against the signed hash — and only then declares the records complete, so that
// the index, the mirror and the lag report never get ahead of the bytes. The next round
// starts in the tail of the one before: its chunks arrive while the last ones of the round
// before are received, stored and flushed. Rounds are declared complete in log order.
import { setTimeout as sleep } from 'node:timers/promises'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import type { VersionLogReader } from '../../storage/version-log.ts'
import { versionChunkList } from '../../storage/version-content.ts'
import {
  logSeq,
  type ChunkReference,
  type LogSeq,
  type VersionRecord,
} from '../../storage/version-record.ts'

/** Records examined per round: bounds the memory for one round's chunk list. */
export const SYNC_RECORDS_PER_ROUND_MAX = 1024
/** Chunks fetched per round (a 256 MiB file is about 4,000 chunks). */
export const SYNC_CHUNKS_PER_ROUND_MAX = 16_384
/** Chunk bytes one round asks for, so that a round completes, and is mirrored, soon. */
export const SYNC_BYTES_PER_ROUND_MAX = 64 * 1024 * 1024
/** Rounds fetched at once. */
export const SYNC_ROUNDS_IN_FLIGHT_MAX = 2
/**
 * The next round starts once the one before has at most this many bytes left to fetch
 * (the fetcher's window per source): the two share the link only in the first one's tail,
 * so the first one completes, and is mirrored, as soon as it would alone.
 */
export const SYNC_NEXT_ROUND_BYTES_LEFT_MAX = 8 * 1024 * 1024
const RETRY_DELAY_MS_MIN = 200
const RETRY_DELAY_MS_MAX = 10_000

export interface WantedChunk {
  readonly hash: ChunkHash
  readonly length: number
}

export interface ChunkFetchProgress {
  readonly bytesFetched: number
  /** The bytes the fetch found missing here, once it has looked. */
  readonly bytesToFetch: number
}

/** Skips the chunks the store holds already, fetches the others and stores them durably. */
export interface ChunkFetch {
  fetch(
    wanted: readonly WantedChunk[],
    sources: readonly string[],
    options: { signal: AbortSignal; onProgress: (progress: ChunkFetchProgress) => void },
  ): Promise<{
    readonly fetched: number
    readonly bytes: number
    readonly failed: readonly ChunkHash[]
  }>
}

export interface ReplicaSyncOptions {
  readonly log: VersionLogReader
  readonly fetcher: ChunkFetch
  /** Peers that may hold the chunks, best first (the master, then the other replicas). */
  readonly sources: () => readonly string[]
  /**
   * Records known complete already (persisted by an earlier run): the sync starts after
   * them, so a restart neither looks at them again nor fetches what retention dropped.
   */
  readonly startLength?: number
  /** Told, in order, each time more records are complete (index them, update the mirror). */
  readonly onComplete: (length: number) => void
  readonly onWarning: (message: string) => void
}

/** Records [start, end) and the chunks they name that no earlier round in flight asks for. */
interface RoundPlan {
  readonly start: number
  readonly end: number
  readonly wanted: readonly WantedChunk[]
  readonly bytes: number
}

class Round {
  readonly start: number
  readonly end: number
  readonly wanted: readonly WantedChunk[]
  bytesPending = 0
  /** Few enough bytes are left that the next round may start beside this one. */
  inTail = false
  readonly tailReached: Promise<void>
  /** Resolves with the problem that keeps the round incomplete, or null; never rejects. */
  fetching: Promise<string | null>
  readonly #fetch: (round: Round) => Promise<string | null>
  #reachTail: () => void = () => undefined

  /** Starts fetching at once. */
  constructor(plan: RoundPlan, fetch: (round: Round) => Promise<string | null>) {
    this.start = plan.start
    this.end = plan.end
    this.wanted = plan.wanted
    this.tailReached = new Promise((resolve) => (this.#reachTail = resolve))
    this.setPending(plan.bytes)
    this.#fetch = fetch
    this.fetching = fetch(this)
  }

  /** Fetches again what an attempt that failed left. */
  retry(): void {
    this.fetching = this.#fetch(this)
  }

  setPending(bytes: number): void {
    this.bytesPending = bytes
    if (bytes > SYNC_NEXT_ROUND_BYTES_LEFT_MAX || this.inTail) return
    this.inTail = true
    this.#reachTail()
  }
}

export class ReplicaSync {
  readonly #options: ReplicaSyncOptions
  readonly #rounds: Round[] = []
  #completeLength = 0
  #bytesFetched = 0

  constructor(options: ReplicaSyncOptions) {
    this.#options = options
    this.#completeLength = options.startLength ?? 0
  }

  /** Records held here with every chunk they name. */
  get completeLength(): number {
    return this.#completeLength
  }

  /** Bytes of the rounds in flight still to fetch (what `status` shows as lag beyond the log). */
  get bytesPending(): number {
    return this.#rounds.reduce((sum, round) => sum + round.bytesPending, 0)
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
        await this.#planRounds(signal)
        const first = this.#rounds[0]
        if (first === undefined) {
          await log.waitForLength(this.#completeLength + 1, signal)
          continue
        }
        if (
          this.#rounds.length < SYNC_ROUNDS_IN_FLIGHT_MAX &&
          (await this.#roomFirst(first, signal))
        )
          continue
        const problem = await first.fetching
        if (signal.aborted) break
        if (problem !== null) {
          this.#options.onWarning(`${problem}; retrying in ${retryDelayMs} ms`)
          await sleep(retryDelayMs, undefined, { signal })
          retryDelayMs = Math.min(RETRY_DELAY_MS_MAX, retryDelayMs * 2)
          first.retry()
          continue
        }
        retryDelayMs = RETRY_DELAY_MS_MIN
        this.#rounds.shift()
        this.#completeLength = first.end
        this.#options.onComplete(first.end)
      } catch (error) {
        if (signal.aborted || isClusterError(error, 'CLOSED')) break
        this.#options.onWarning(
          `replica sync: ${(error as Error).message}; retrying in ${retryDelayMs} ms`,
        )
        await sleep(retryDelayMs, undefined, { signal }).catch(() => undefined)
        retryDelayMs = Math.min(RETRY_DELAY_MS_MAX, retryDelayMs * 2)
      }
    }
    await Promise.all(this.#rounds.map((round) => round.fetching))
    this.#rounds.length = 0
  }

  /**
   * Starts fetching new rounds while there is room, the last round is in its tail and the
   * log holds records past it.
   */
  async #planRounds(signal: AbortSignal): Promise<void> {
    const { log } = this.#options
    while (this.#rounds.length < SYNC_ROUNDS_IN_FLIGHT_MAX && !signal.aborted) {
      const last = this.#rounds.at(-1)
      if (last?.inTail === false) return
      const start = last?.end ?? this.#completeLength
      if (start >= log.length) return
      const plan = await this.#plan(start, Math.min(log.length, start + SYNC_RECORDS_PER_ROUND_MAX))
      this.#rounds.push(new Round(plan, (round) => this.#fetch(round, signal)))
    }
  }

  /**
   * Waits until `first` settles, or there is room for another round: the last round is in
   * its tail and the log grew past it. True when there is room first.
   */
  async #roomFirst(first: Round, signal: AbortSignal): Promise<boolean> {
    const last = this.#rounds.at(-1)!
    const waiting = new AbortController()
    const room = last.tailReached
      .then(() =>
        this.#options.log.waitForLength(last.end + 1, AbortSignal.any([signal, waiting.signal])),
      )
      .then(
        () => true,
        () => false, // stopped waiting: the first round settled first, or the sync stops
      )
    const roomFirst = await Promise.race([first.fetching.then(() => false), room])
    waiting.abort()
    return roomFirst
  }

  /** The chunks records [start, end) name, stopping early at the per-round bounds. */
  async #plan(start: number, end: number): Promise<RoundPlan> {
    const inFlight = new Set(
      this.#rounds.flatMap((round) => round.wanted.map((chunk) => chunk.hash)),
    )
    const seen = new Set<ChunkHash>()
    const wanted: WantedChunk[] = []
    let bytes = 0
    for (let seq = start; seq < end; seq++) {
      const chunks = await this.#chunksOf(seq)
      const recordBytes = chunks.reduce((sum, chunk) => sum + chunk.lengthBytes, 0)
      const full =
        seen.size + chunks.length > SYNC_CHUNKS_PER_ROUND_MAX ||
        bytes + recordBytes > SYNC_BYTES_PER_ROUND_MAX
      if (full && seq > start) return { start, end: seq, wanted, bytes }
      for (const chunk of chunks) {
        if (seen.has(chunk.hash)) continue
        seen.add(chunk.hash)
        // A chunk an earlier round fetches is here before this round can complete.
        if (inFlight.has(chunk.hash)) continue
        wanted.push({ hash: chunk.hash, length: chunk.lengthBytes })
        bytes += chunk.lengthBytes
      }
    }
    return { start, end, wanted, bytes }
  }

  /**
   * The chunks a record names; none for a record that cannot be read (the index skips it
   * too). A patch names its whole list, base chunks included: the fetch skips what is here
   * already, and whatever retention dropped here meanwhile is fetched again.
   */
  async #chunksOf(seq: number): Promise<readonly ChunkReference[]> {
    const read = (at: LogSeq): Promise<VersionRecord> => this.#options.log.read(at)
    try {
      const record = await read(logSeq(seq))
      if (record.kind === 'patch') return await versionChunkList(logSeq(seq), read)
      return record.kind === 'put' || record.kind === 'chunks' ? record.chunks : []
    } catch (error) {
      if (isClusterError(error, 'BAD_MESSAGE')) return []
      throw error
    }
  }

  /** Fetches a round's chunks: null when every one is here, else what kept the round incomplete. */
  async #fetch(round: Round, signal: AbortSignal): Promise<string | null> {
    if (round.wanted.length === 0) return null
    const sources = this.#options.sources()
    let bytesCounted = 0
    try {
      const result = await this.#options.fetcher.fetch(round.wanted, sources, {
        signal,
        onProgress: ({ bytesFetched, bytesToFetch }) => {
          this.#bytesFetched += bytesFetched - bytesCounted
          bytesCounted = bytesFetched
          round.setPending(bytesToFetch - bytesFetched)
        },
      })
      this.#bytesFetched += result.bytes - bytesCounted
      if (result.failed.length > 0)
        return `${result.failed.length} chunk(s) of records ${round.start}..${round.end - 1} could not be fetched from ${sources.length} source(s)`
      round.setPending(0)
      return null
    } catch (error) {
      return `replica sync: ${(error as Error).message}`
    }
  }
}
