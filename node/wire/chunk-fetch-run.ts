// One fetch() call of the chunk protocol. Every chunk is asked of the first source; a
// source that lacks it passes it to the next. Each source has one stream and a bounded
// window of chunk bytes requested and not yet stored: limiting what is requested is the
// flow control (pausing a libp2p stream with a large window resets it, DEPENDENCIES.md).
// Received chunks are stored by several puts at once, because one put waits on an index
// look-up and doing them one by one left both processes idle. Every chunk is verified by
// the chunk store's put(); wrong bytes, a garbled frame or a stall drop the source for
// this fetch and its chunks go to the next source; a broken stream is retried a few times
// first. The store is flushed periodically and at the end, so what is reported fetched is
// durable.
import type { Stream } from '@libp2p/interface'
import { assert } from '../../consensus/assert.ts'
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'
import { CHUNK_SIZE_MAX_BYTES, type ChunkHash } from '../../storage/chunk-types.ts'
import type {
  ChunkFetcherOptions,
  FetchOptions,
  FetchProgress,
  FetchResult,
  WantedChunk,
} from './chunk-fetcher.ts'
import { CHUNK_REQUEST_HASHES_MAX, decodeResponse, encodeRequest } from './chunk-messages.ts'
import { FrameReader, streamError, writeFrame } from './framing.ts'
import { CHUNKS_PROTOCOL } from './protocol-ids.ts'
import { sleep } from './sleep.ts'

/** Chunk bytes requested from one source and not yet stored: well under the stream window, far over a chunk. */
export const CHUNK_WINDOW_BYTES_PER_SOURCE = 8 * 1024 * 1024
assert(
  CHUNK_WINDOW_BYTES_PER_SOURCE >= CHUNK_SIZE_MAX_BYTES &&
    CHUNK_WINDOW_BYTES_PER_SOURCE <= CHUNKS_PROTOCOL.readAheadBytesMax,
  'a window holds the largest chunk and stays within what the reader may buffer',
)
/** Puts at once per source (each holds its chunk's bytes, inside the window). */
export const CHUNK_PUTS_IN_FLIGHT_MAX = 32
/** Waiting longer than this for the next answer means the source stalls: it is dropped. */
export const CHUNK_RESPONSE_TIMEOUT_MS = 10_000
export const CHUNK_OPEN_TIMEOUT_MS = 10_000
/** Broken streams to one source in a row before it is dropped for this fetch. */
export const CHUNK_SOURCE_ATTEMPTS_MAX = 3
export const CHUNK_RETRY_BACKOFF_MS = 200
/** Bytes stored between flushes of a long fetch. */
export const CHUNK_FLUSH_INTERVAL_BYTES = 64 * 1024 * 1024

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

/** How a stream to a source ended: its queue ran dry, or it failed (retry or drop the source). */
interface SessionEnd {
  readonly end: 'idle' | 'retry' | 'drop'
  readonly progressed: boolean
  readonly reason: string
}

export class FetchRun {
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
    if (outer?.aborted === true) this.#abort.abort(outer.reason)
    outer?.addEventListener('abort', () => this.#stop(outer.reason), { once: true })
    for (const chunk of chunks) this.#moveOn({ ...chunk, sourceIndex: -1 })
  }

  async execute(): Promise<Omit<FetchResult, 'present'>> {
    try {
      await Promise.all(this.#sources.map((source) => this.#work(source)))
    } finally {
      await this.#options.chunkStore.flush()
    }
    if (this.#fatal !== null) throw this.#fatal
    const signal = this.#abort.signal
    if (signal.aborted) throw streamError(CHUNKS_PROTOCOL, signal.reason, signal)
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
      if (end === 'drop' || attempts >= CHUNK_SOURCE_ATTEMPTS_MAX) return this.#drop(source, reason)
      this.#log(`chunk stream to ${source.peer} broke (${reason}), retrying`)
      await sleep(CHUNK_RETRY_BACKOFF_MS * attempts, this.#abort.signal)
    }
  }

  /** Requests, receives and stores chunks over one stream until the source's queue is empty or the stream fails. */
  async #session(source: Source): Promise<SessionEnd> {
    const outstanding: Item[] = [] // requested, answer not read yet
    const storing = new Set<Promise<void>>()
    const failedPuts: Item[] = []
    let putFailure: ClusterError | null = null
    let windowBytes = 0
    let progressed = false
    let stream: Stream | null = null
    try {
      const openSignal = AbortSignal.any([
        this.#abort.signal,
        AbortSignal.timeout(CHUNK_OPEN_TIMEOUT_MS),
      ])
      stream = await this.#options.node.openStream(source.peer, CHUNKS_PROTOCOL.id, openSignal)
      const reader = new FrameReader(stream, CHUNKS_PROTOCOL)
      for (;;) {
        if (putFailure !== null) throw putFailure
        const batch = takeWithin(source.queue, CHUNK_WINDOW_BYTES_PER_SOURCE - windowBytes)
        if (batch.length > 0) {
          outstanding.push(...batch)
          windowBytes += batch.reduce((sum, item) => sum + item.length, 0)
          await this.#request(stream, batch)
        }
        const item = outstanding.shift()
        if (item === undefined) {
          if (storing.size > 0) {
            await Promise.race(storing)
            continue
          }
          await stream
            .close({ signal: AbortSignal.timeout(CHUNK_OPEN_TIMEOUT_MS) })
            .catch(() => undefined)
          return { end: 'idle', progressed, reason: '' }
        }
        let bytes: Uint8Array | null
        try {
          bytes = await this.#receive(source, reader, item)
        } catch (error) {
          outstanding.unshift(item)
          throw error
        }
        if (bytes === null) {
          windowBytes -= item.length
          this.#moveOn(item)
          continue
        }
        if (storing.size >= CHUNK_PUTS_IN_FLIGHT_MAX) await Promise.race(storing)
        const put: Promise<void> = this.#store(item, bytes)
          .then(
            () => void (progressed = true),
            (error: unknown) => {
              putFailure ??= error as ClusterError
              failedPuts.push(item)
            },
          )
          .finally(() => {
            storing.delete(put)
            windowBytes -= item.length
          })
        storing.add(put)
      }
    } catch (error) {
      await Promise.all(storing)
      // What this stream still owed goes back first in line, to this source or the next.
      source.queue.unshift(...failedPuts, ...outstanding)
      const failure = isClusterError(error) ? error : streamError(CHUNKS_PROTOCOL, error)
      stream?.abort(failure)
      const retry = this.#finished || failure.code === 'CLOSED' || failure.code === 'IO_ERROR'
      return { end: retry ? 'retry' : 'drop', progressed, reason: failure.message }
    }
  }

  async #request(stream: Stream, items: readonly Item[]): Promise<void> {
    for (let start = 0; start < items.length; start += CHUNK_REQUEST_HASHES_MAX) {
      const hashes = items.slice(start, start + CHUNK_REQUEST_HASHES_MAX).map((item) => item.hash)
      await writeFrame(stream, CHUNKS_PROTOCOL, encodeRequest(hashes), {
        signal: this.#abort.signal,
      })
    }
  }

  /** The answer for `item`: its bytes, or null when the source lacks it. Throws on a bad or late answer. */
  async #receive(source: Source, reader: FrameReader, item: Item): Promise<Uint8Array | null> {
    const frame = await reader.read({
      signal: this.#abort.signal,
      timeoutMs: this.#options.responseTimeoutMs ?? CHUNK_RESPONSE_TIMEOUT_MS,
    })
    if (frame === null) throw ClusterError.closed(`${source.peer} closed the chunk stream early`)
    const response = decodeResponse(frame)
    if (!response.ok) throw ClusterError.badMessage(`bad chunk answer: ${response.error}`)
    const answer = response.value
    if (answer.kind === 'refused') throw ClusterError.refused(answer.reason)
    if (answer.hash !== item.hash)
      throw ClusterError.badMessage(`answered ${answer.hash} for ${item.hash}`)
    if (answer.kind === 'missing') return null
    if (answer.bytes.byteLength !== item.length)
      throw ClusterError.badMessage(
        `chunk ${item.hash} came with ${answer.bytes.byteLength} bytes, not ${item.length}`,
      )
    return answer.bytes
  }

  /** Stores a chunk: BAD_MESSAGE when its bytes are wrong (the source's fault), the store's error when it fails (ours, fatal). */
  async #store(item: Item, bytes: Uint8Array): Promise<void> {
    try {
      await this.#options.chunkStore.put(item.hash, bytes)
    } catch (error) {
      if (isClusterError(error, 'HASH_MISMATCH'))
        throw ClusterError.badMessage(`chunk ${item.hash} did not match its hash`)
      this.#fatal ??= isClusterError(error)
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

/** Takes items from the front of `queue` while their bytes fit in `bytesFree` (a window always fits a chunk). */
function takeWithin(queue: Item[], bytesFree: number): Item[] {
  let count = 0
  let bytes = 0
  while (count < queue.length && bytes + queue[count]!.length <= bytesFree)
    bytes += queue[count++]!.length
  return queue.splice(0, count)
}
