// The fetching side of the chunk protocol. Every wanted chunk is asked of the first
// source; a source that lacks it passes it to the next. Each source has one stream and a
// bounded window of bytes requested but not yet received: limiting what is requested is
// the flow control (pausing a libp2p stream with a large window resets it, see
// DEPENDENCIES.md). Every chunk is verified by the chunk store's put(); wrong bytes, a
// garbled frame or a stall drop the source for this fetch and its chunks go to the next
// source; a broken stream is retried a few times first. The store is flushed periodically
// and at the end, so what fetch() reports fetched is durable.
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'
import type { Stream } from '@libp2p/interface'
import {
  CHUNK_SIZE_MAX_BYTES,
  type ChunkHash,
  type ChunkStoreApi,
} from '../../storage/chunk-types.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { CHUNK_REQUEST_HASHES_MAX, decodeResponse, encodeRequest } from './chunk-messages.ts'
import { sleep } from './sleep.ts'
import { FrameReader, streamError, writeFrame } from './framing.ts'
import { CHUNKS_PROTOCOL } from './protocol-ids.ts'

/** Chunk bytes requested from one source and not yet received (well under the stream window). */
export const CHUNK_WINDOW_BYTES_PER_SOURCE = 8 * 1024 * 1024
/** Waiting longer than this for the next answer means the source stalls: it is dropped. */
export const CHUNK_RESPONSE_TIMEOUT_MS = 10_000
export const CHUNK_OPEN_TIMEOUT_MS = 10_000
/** Broken streams to one source before it is dropped for this fetch. */
export const CHUNK_SOURCE_ATTEMPTS_MAX = 3
export const CHUNK_RETRY_BACKOFF_MS = 200
/** Bytes stored between flushes of a long fetch. */
export const CHUNK_FLUSH_INTERVAL_BYTES = 64 * 1024 * 1024
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

interface Item extends WantedChunk {
  /** The source this chunk is asked of now; it moves on to later sources only. */
  sourceIndex: number
}

interface Source {
  readonly peer: string
  readonly queue: Item[]
  dropped: boolean
  wake: (() => void) | null
}

/** What ended a stream to a source. */
type SessionEnd = 'idle' | 'retry' | 'drop'

/** One fetch() call: the per-source queues, the workers that drain them, and the tally. */
class FetchRun {
  readonly #options: ChunkFetcherOptions
  readonly #log: (line: string) => void
  readonly #sources: Source[]
  readonly #abort = new AbortController()
  readonly #onProgress: ((progress: FetchProgress) => void) | undefined
  readonly #chunksToFetch: number
  readonly #bytesToFetch: number
  readonly #failed: ChunkHash[] = []
  #remaining: number
  #fetched = 0
  #bytes = 0
  #bytesSinceFlush = 0
  /** A failure of this node's own store: the fetch cannot go on. */
  #fatal: ClusterError | null = null

  constructor(
    options: ChunkFetcherOptions,
    chunks: readonly WantedChunk[],
    peers: readonly string[],
    fetchOptions: FetchOptions,
  ) {
    this.#options = options
    this.#log = options.log ?? (() => undefined)
    this.#onProgress = fetchOptions.onProgress
    this.#sources = peers.map((peer) => ({ peer, queue: [], dropped: false, wake: null }))
    this.#remaining = chunks.length
    this.#chunksToFetch = chunks.length
    this.#bytesToFetch = chunks.reduce((sum, chunk) => sum + chunk.length, 0)
    const outer = fetchOptions.signal
    if (outer !== undefined) {
      if (outer.aborted) this.#abort.abort(outer.reason)
      else outer.addEventListener('abort', () => this.#stop(outer.reason), { once: true })
    }
    for (const chunk of chunks) this.#moveOn({ ...chunk, sourceIndex: -1 })
  }

  async execute(): Promise<Omit<FetchResult, 'present'>> {
    try {
      await Promise.all(this.#sources.map((source) => this.#work(source)))
    } finally {
      await this.#options.chunkStore.flush()
    }
    if (this.#fatal !== null) throw this.#fatal
    if (this.#abort.signal.aborted)
      throw streamError(CHUNKS_PROTOCOL, this.#abort.signal.reason, this.#abort.signal)
    return { fetched: this.#fetched, bytes: this.#bytes, failed: this.#failed }
  }

  get #finished(): boolean {
    return this.#remaining === 0 || this.#abort.signal.aborted
  }

  async #work(source: Source): Promise<void> {
    let attempts = 0
    while (!this.#finished && !source.dropped) {
      if (source.queue.length === 0) {
        await new Promise<void>((resolve) => (source.wake = resolve))
        source.wake = null
        continue
      }
      const { end, progressed, reason } = await this.#session(source)
      if (progressed) attempts = 0
      if (end === 'idle' || this.#finished) continue
      attempts++
      if (end === 'drop' || attempts >= CHUNK_SOURCE_ATTEMPTS_MAX) {
        this.#drop(source, reason)
        return
      }
      this.#log(`chunk stream to ${source.peer} broke (${reason}), retrying`)
      await sleep(CHUNK_RETRY_BACKOFF_MS * attempts, this.#abort.signal)
    }
  }

  /** Requests and receives chunks over one stream until the source's queue is empty or the stream fails. */
  async #session(
    source: Source,
  ): Promise<{ end: SessionEnd; progressed: boolean; reason: string }> {
    const outstanding: Item[] = []
    let progressed = false
    let stream: Stream | null = null
    try {
      const openSignal = AbortSignal.any([
        this.#abort.signal,
        AbortSignal.timeout(CHUNK_OPEN_TIMEOUT_MS),
      ])
      stream = await this.#options.node.openStream(source.peer, CHUNKS_PROTOCOL.id, openSignal)
      const reader = new FrameReader(stream, CHUNKS_PROTOCOL)
      let windowBytes = 0
      for (;;) {
        const batch = takeWithin(
          source.queue,
          CHUNK_WINDOW_BYTES_PER_SOURCE - windowBytes,
          outstanding.length === 0,
        )
        if (batch.length > 0) {
          outstanding.push(...batch)
          windowBytes += batch.reduce((sum, item) => sum + item.length, 0)
          for (let start = 0; start < batch.length; start += CHUNK_REQUEST_HASHES_MAX) {
            const hashes = batch
              .slice(start, start + CHUNK_REQUEST_HASHES_MAX)
              .map((item) => item.hash)
            await writeFrame(stream, CHUNKS_PROTOCOL, encodeRequest(hashes), this.#abort.signal)
          }
        }
        const item = outstanding[0]
        if (item === undefined) {
          await stream
            .close({ signal: AbortSignal.timeout(CHUNK_OPEN_TIMEOUT_MS) })
            .catch(() => undefined)
          return { end: 'idle', progressed, reason: '' }
        }
        await this.#receive(source, reader, item)
        outstanding.shift()
        windowBytes -= item.length
        progressed = true
      }
    } catch (error) {
      // The chunks this stream still owed go back first in line, to this source or the next.
      source.queue.unshift(...outstanding)
      const failure = isClusterError(error) ? error : streamError(CHUNKS_PROTOCOL, error)
      stream?.abort(failure)
      const reason = failure.message
      if (this.#finished || failure.code === 'CLOSED' || failure.code === 'IO_ERROR')
        return { end: 'retry', progressed, reason }
      return { end: 'drop', progressed, reason }
    }
  }

  /** Takes the answer for `item`: stores its chunk, or passes it on when the source lacks it. */
  async #receive(source: Source, reader: FrameReader, item: Item): Promise<void> {
    const timeoutMs = this.#options.responseTimeoutMs ?? CHUNK_RESPONSE_TIMEOUT_MS
    const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(timeoutMs)])
    let frame: Uint8Array | null
    try {
      frame = await reader.read(signal)
    } catch (error) {
      throw streamError(CHUNKS_PROTOCOL, error, signal)
    }
    if (frame === null) throw ClusterError.closed(`${source.peer} closed the chunk stream early`)
    const response = decodeResponse(frame)
    if (!response.ok) throw ClusterError.badMessage(`bad chunk answer: ${response.error}`)
    const answer = response.value
    if (answer.kind === 'refused') throw ClusterError.refused(answer.reason)
    if (answer.hash !== item.hash)
      throw ClusterError.badMessage(`answered ${answer.hash} for ${item.hash}`)
    if (answer.kind === 'missing') return void this.#moveOn(item)
    if (answer.bytes.byteLength !== item.length)
      throw ClusterError.badMessage(
        `chunk ${item.hash} came with ${answer.bytes.byteLength} bytes, not ${item.length}`,
      )
    await this.#store(item, answer.bytes)
  }

  async #store(item: Item, bytes: Uint8Array): Promise<void> {
    try {
      await this.#options.chunkStore.put(item.hash, bytes)
    } catch (error) {
      // Wrong bytes are the source's fault; anything else is this node's store failing.
      if (isClusterError(error, 'HASH_MISMATCH'))
        throw ClusterError.badMessage(`chunk ${item.hash} did not match its hash`)
      this.#fatal = isClusterError(error)
        ? error
        : ClusterError.io(`chunk store: ${(error as Error).message}`, error)
      this.#stop(this.#fatal)
      throw this.#fatal
    }
    this.#fetched++
    this.#bytes += item.length
    this.#bytesSinceFlush += item.length
    this.#settled()
    this.#onProgress?.({
      chunksFetched: this.#fetched,
      bytesFetched: this.#bytes,
      chunksToFetch: this.#chunksToFetch,
      bytesToFetch: this.#bytesToFetch,
    })
    if (this.#bytesSinceFlush >= CHUNK_FLUSH_INTERVAL_BYTES) {
      this.#bytesSinceFlush = 0
      await this.#options.chunkStore.flush()
    }
  }

  /** Passes a chunk to the next source still in the running, or gives it up. */
  #moveOn(item: Item): void {
    const next = this.#sources.findIndex(
      (source, index) => index > item.sourceIndex && !source.dropped,
    )
    if (next === -1) {
      this.#failed.push(item.hash)
      this.#settled()
      return
    }
    item.sourceIndex = next
    const source = this.#sources[next]!
    source.queue.push(item)
    source.wake?.()
  }

  #drop(source: Source, reason: string): void {
    source.dropped = true
    this.#log(`dropped chunk source ${source.peer} for this fetch: ${reason}`)
    for (const item of source.queue.splice(0)) this.#moveOn(item)
  }

  #settled(): void {
    this.#remaining--
    if (this.#remaining === 0) this.#wakeAll()
  }

  #stop(reason: unknown): void {
    this.#abort.abort(reason)
    this.#wakeAll()
  }

  #wakeAll(): void {
    for (const source of this.#sources) source.wake?.()
  }
}

/** Takes items from the front of `queue` while their bytes fit in `bytesFree` (at least one when `atLeastOne`). */
function takeWithin(queue: Item[], bytesFree: number, atLeastOne: boolean): Item[] {
  let count = 0
  let bytes = 0
  while (count < queue.length) {
    const length = queue[count]!.length
    if (bytes + length > bytesFree && !(atLeastOne && count === 0)) break
    bytes += length
    count++
  }
  return queue.splice(0, count)
}
