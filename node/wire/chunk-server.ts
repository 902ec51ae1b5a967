// The serving side of the chunk protocol: answers every requested hash, in request
// order, with the chunk (read and verified by the chunk store) or "missing". Its work is
// bounded: hashes waiting per stream, reads ahead per stream, and reads at once on the
// whole node. A damaged chunk is never served: it is reported "missing", so the fetcher
// asks another holder.
import type { Stream } from '@libp2p/interface'
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash, ChunkStoreApi } from '../../storage/chunk-types.ts'
import type { P2pNode } from '../p2p/p2p-node.ts'
import { decodeRequest, encodeResponse, type ChunkResponse } from './chunk-messages.ts'
import { FrameReader, writeFrame } from './framing.ts'
import { CHUNKS_PROTOCOL, handlerOptions } from './protocol-ids.ts'

/** Chunk reads at once on this node, over every stream. */
export const CHUNK_SERVER_READS_IN_FLIGHT_MAX = 32
/** Reads one stream may have started ahead of the answer being sent. */
export const CHUNK_STREAM_READS_AHEAD_MAX = 8
/** Requested hashes one stream may have waiting; a fetcher's window keeps far fewer. */
export const CHUNK_STREAM_PENDING_HASHES_MAX = 4096
/** A response the fetcher does not take within this long means it is gone. */
export const CHUNK_SERVER_WRITE_TIMEOUT_MS = 30_000

export interface ChunkServerOptions {
  readonly node: P2pNode
  readonly chunkStore: Pick<ChunkStoreApi, 'get'>
  /** Whether `peer` may fetch chunks from this node (an admitted node). */
  readonly authorize: (peer: string) => boolean
  readonly log?: (line: string) => void
}

export interface ChunkServerCounters {
  chunksServed: number
  bytesServed: number
  chunksMissing: number
  streamsRefused: number
}

export class ChunkServer {
  readonly counters: ChunkServerCounters = {
    chunksServed: 0,
    bytesServed: 0,
    chunksMissing: 0,
    streamsRefused: 0,
  }
  readonly #options: ChunkServerOptions
  readonly #log: (line: string) => void
  readonly #streams = new Set<Stream>()
  readonly #readSlots: (() => void)[] = []
  #readsInFlight = 0

  constructor(options: ChunkServerOptions) {
    this.#options = options
    this.#log = options.log ?? (() => undefined)
  }

  async start(): Promise<void> {
    await this.#options.node.handle(
      CHUNKS_PROTOCOL.id,
      (stream, peer) => void this.#serve(stream, peer),
      handlerOptions(CHUNKS_PROTOCOL),
    )
  }

  async stop(): Promise<void> {
    await this.#options.node.unhandle(CHUNKS_PROTOCOL.id)
    for (const stream of this.#streams) stream.abort(ClusterError.closed('chunk server stopped'))
    this.#streams.clear()
  }

  async #serve(stream: Stream, peer: string): Promise<void> {
    if (!this.#options.authorize(peer)) {
      this.counters.streamsRefused++
      this.#log(`refused chunk requests from ${peer}: not admitted`)
      const refusal = encodeResponse({
        kind: 'refused',
        reason: `${peer} may not fetch chunks here`,
      })
      await writeFrame(stream, CHUNKS_PROTOCOL, refusal, {
        timeoutMs: CHUNK_SERVER_WRITE_TIMEOUT_MS,
      })
        .then(() => stream.close())
        .catch(() => stream.abort(ClusterError.refused('not admitted')))
      return
    }
    this.#streams.add(stream)
    const session = new ServeSession(stream, (hash) => this.#read(hash))
    try {
      await session.run()
    } catch (error) {
      if (!isClusterError(error)) throw error
      if (error.code === 'BAD_MESSAGE')
        this.#log(`reset a chunk stream from ${peer}: ${error.message}`)
      stream.abort(error)
    } finally {
      this.#streams.delete(stream)
    }
  }

  async #read(hash: ChunkHash): Promise<ChunkResponse> {
    // A finished read hands its slot straight to the next waiter, so the count never overshoots.
    if (this.#readsInFlight >= CHUNK_SERVER_READS_IN_FLIGHT_MAX)
      await new Promise<void>((resolve) => this.#readSlots.push(resolve))
    else this.#readsInFlight++
    try {
      const bytes = await this.#options.chunkStore.get(hash)
      this.counters.chunksServed++
      this.counters.bytesServed += bytes.byteLength
      return { kind: 'chunk', hash, bytes }
    } catch (error) {
      if (!isClusterError(error, 'NOT_FOUND'))
        this.#log(`not serving chunk ${hash}: ${(error as Error).message}`)
      this.counters.chunksMissing++
      return { kind: 'missing', hash }
    } finally {
      const next = this.#readSlots.shift()
      if (next === undefined) this.#readsInFlight--
      else next()
    }
  }
}

/** One fetcher's stream: takes requests as they come and answers them in order. */
class ServeSession {
  readonly #stream: Stream
  readonly #read: (hash: ChunkHash) => Promise<ChunkResponse>
  readonly #pending: ChunkHash[] = []
  readonly #reads: Promise<ChunkResponse>[] = []
  #requestsEnded = false
  #failure: unknown = null
  #wake: (() => void) | null = null

  constructor(stream: Stream, read: (hash: ChunkHash) => Promise<ChunkResponse>) {
    this.#stream = stream
    this.#read = read
  }

  async run(): Promise<void> {
    const requests = this.#takeRequests().catch((error: unknown) => {
      this.#failure = error
      this.#wake?.()
    })
    await this.#answer()
    await requests
    await this.#stream.close().catch(() => undefined)
  }

  async #takeRequests(): Promise<void> {
    const reader = new FrameReader(this.#stream, CHUNKS_PROTOCOL)
    for (;;) {
      const frame = await reader.read()
      if (frame === null) break
      const request = decodeRequest(frame)
      if (!request.ok) throw ClusterError.badMessage(request.error)
      const waiting = this.#pending.length + this.#reads.length + request.value.length
      if (waiting > CHUNK_STREAM_PENDING_HASHES_MAX)
        throw ClusterError.badMessage(
          `${waiting} chunks requested at once (at most ${CHUNK_STREAM_PENDING_HASHES_MAX})`,
        )
      this.#pending.push(...request.value)
      this.#wake?.()
    }
    this.#requestsEnded = true
    this.#wake?.()
  }

  async #answer(): Promise<void> {
    for (;;) {
      if (this.#failure !== null) throw this.#failure
      while (this.#reads.length < CHUNK_STREAM_READS_AHEAD_MAX && this.#pending.length > 0)
        this.#reads.push(this.#read(this.#pending.shift()!))
      const next = this.#reads.shift()
      if (next === undefined) {
        if (this.#requestsEnded) return
        await new Promise<void>((resolve) => (this.#wake = resolve))
        this.#wake = null
        continue
      }
      const response = await next
      await writeFrame(this.#stream, CHUNKS_PROTOCOL, encodeResponse(response), {
        timeoutMs: CHUNK_SERVER_WRITE_TIMEOUT_MS,
      })
    }
  }
}
