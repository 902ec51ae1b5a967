// Length-prefixed frames over a libp2p 3 stream: a 4-byte big-endian length, then the
// payload. The reader checks the length against the protocol's limit as soon as the
// prefix arrives (an oversized frame is refused before a byte of it is buffered), bounds
// what a peer may send ahead, tells a clean end between frames from a frame cut short,
// and aborts the stream on any protocol error, so a bad peer costs one stream, never the
// process. Written here rather than with lpStream because lpStream reports a clean end
// and a truncated frame with the same error.
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { ClusterError } from '../../consensus/cluster-error.ts'
import type { ProtocolSpec } from './protocol-ids.ts'

export const FRAME_PREFIX_BYTES = 4
/** No protocol may allow more than a 32-bit length says. */
const FRAME_BYTES_LIMIT = 0xffff_ffff

export function encodeFrame(payload: Uint8Array): Uint8Array {
  if (payload.byteLength > FRAME_BYTES_LIMIT)
    throw ClusterError.badArgument(`a frame of ${payload.byteLength} bytes cannot be encoded`)
  const frame = new Uint8Array(FRAME_PREFIX_BYTES + payload.byteLength)
  new DataView(frame.buffer).setUint32(0, payload.byteLength)
  frame.set(payload, FRAME_PREFIX_BYTES)
  return frame
}

/**
 * How long an operation may wait, and what may cancel it. The timer is armed only when
 * the operation must actually wait (a frame already buffered, or a send the stream takes
 * at once, costs none), since the chunk protocol reads and writes thousands a second.
 */
export interface WaitOptions {
  readonly signal?: AbortSignal
  /** TIMEOUT when the peer sends nothing, or takes nothing, for this long. */
  readonly timeoutMs?: number
}

/** Sends one frame, waiting for the stream to drain when its buffer is full. */
export async function writeFrame(
  stream: Stream,
  spec: ProtocolSpec,
  payload: Uint8Array,
  options: WaitOptions = {},
): Promise<void> {
  if (payload.byteLength > spec.frameBytesMax)
    throw ClusterError.badArgument(
      `a ${spec.name} frame of ${payload.byteLength} bytes is over the limit of ${spec.frameBytesMax}`,
    )
  let sent: boolean
  try {
    sent = stream.send(encodeFrame(payload))
  } catch (error) {
    throw streamError(spec, error)
  }
  if (!sent)
    await waitFor(spec, options, 'took nothing', (signal) =>
      stream.onDrain({ signal }).catch((error: unknown) => {
        throw streamError(spec, error)
      }),
    )
}

/**
 * Runs `wait` (which gets a signal to stop on) under the caller's signal and time limit:
 * CLOSED when the caller cancels, TIMEOUT when the limit passes first.
 */
async function waitFor<T>(
  spec: ProtocolSpec,
  options: WaitOptions,
  whatPeerDid: string,
  wait: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const stop = new AbortController()
  const { signal, timeoutMs } = options
  if (signal?.aborted === true) throw streamError(spec, signal.reason, signal)
  let failure: ClusterError | null = null
  const onAbort = (): void => {
    failure = streamError(spec, signal?.reason, signal)
    stop.abort(failure)
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          failure = ClusterError.timeout(`${spec.name} peer ${whatPeerDid} for ${timeoutMs} ms`)
          stop.abort(failure)
        }, timeoutMs)
  try {
    return await wait(stop.signal)
  } catch (error) {
    throw failure ?? error
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', onAbort)
  }
}

/** The error a failed stream operation becomes: TIMEOUT when the caller's time ran out. */
export function streamError(
  spec: ProtocolSpec,
  error: unknown,
  signal?: AbortSignal,
): ClusterError {
  if (error instanceof ClusterError) return error
  if (signal?.aborted === true) {
    const reason: unknown = signal.reason
    if (reason instanceof ClusterError) return reason
    if (reason instanceof Error && reason.name === 'TimeoutError')
      return ClusterError.timeout(`${spec.name} stream timed out`)
    return ClusterError.closed(`${spec.name} stream cancelled`)
  }
  return ClusterError.closed(`${spec.name} stream closed: ${(error as Error).message}`)
}

function toBytes(data: Uint8Array | { subarray(): Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

export class FrameReader {
  readonly #stream: Stream
  readonly #spec: ProtocolSpec
  #chunks: Uint8Array[] = []
  #bufferedBytes = 0
  /** Length of the frame being assembled, once its prefix has arrived. */
  #frameBytes: number | null = null
  #remoteEnded = false
  #failure: ClusterError | null = null
  #wake: (() => void) | null = null

  constructor(stream: Stream, spec: ProtocolSpec) {
    this.#stream = stream
    this.#spec = spec
    stream.addEventListener('message', this.#onMessage)
    stream.addEventListener('remoteCloseWrite', this.#onRemoteEnd)
    stream.addEventListener('close', this.#onClose)
  }

  /**
   * The next frame, or null when the peer closed its side cleanly between frames. Throws
   * BAD_MESSAGE (and aborts the stream) on an oversized or truncated frame, CLOSED when the
   * stream was reset, TIMEOUT when the time limit passes first, CLOSED when cancelled.
   */
  async read(options: WaitOptions = {}): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#failure !== null) throw this.#failure
      const frame = this.#takeFrame()
      if (frame !== null) return frame
      if (this.#remoteEnded) {
        if (this.#bufferedBytes === 0 && this.#frameBytes === null) return null
        throw this.#fail(
          ClusterError.badMessage(
            `${this.#spec.name} stream ended inside a frame (${this.#bufferedBytes} bytes of it)`,
          ),
        )
      }
      await waitFor(this.#spec, options, 'sent nothing', (stop) => this.#waitForBytes(stop))
    }
  }

  /** Stops reading and hands back what arrived after the last frame read (another layer takes over). */
  detach(): Uint8Array {
    this.#removeListeners()
    const rest = this.#take(this.#bufferedBytes)
    this.#chunks = []
    this.#bufferedBytes = 0
    return rest
  }

  #waitForBytes(stop: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onStop = (): void => {
        this.#wake = null
        reject(stop.reason as Error)
      }
      stop.addEventListener('abort', onStop, { once: true })
      this.#wake = () => {
        stop.removeEventListener('abort', onStop)
        this.#wake = null
        resolve()
      }
    })
  }

  #takeFrame(): Uint8Array | null {
    if (this.#frameBytes === null) {
      if (this.#bufferedBytes < FRAME_PREFIX_BYTES) return null
      const prefix = this.#take(FRAME_PREFIX_BYTES)
      const length = new DataView(prefix.buffer, prefix.byteOffset, FRAME_PREFIX_BYTES).getUint32(0)
      if (length > this.#spec.frameBytesMax)
        throw this.#fail(
          ClusterError.badMessage(
            `${this.#spec.name} frame of ${length} bytes is over the limit of ${this.#spec.frameBytesMax}`,
          ),
        )
      this.#frameBytes = length
    }
    if (this.#bufferedBytes < this.#frameBytes) return null
    const frame = this.#take(this.#frameBytes)
    this.#frameBytes = null
    return frame
  }

  /** Removes `count` buffered bytes from the front, copying only when they span chunks. */
  #take(count: number): Uint8Array {
    const first = this.#chunks[0]
    if (first !== undefined && first.byteLength >= count) {
      this.#chunks[0] = first.subarray(count)
      if (this.#chunks[0].byteLength === 0) this.#chunks.shift()
      this.#bufferedBytes -= count
      return first.subarray(0, count)
    }
    const result = new Uint8Array(count)
    let filled = 0
    while (filled < count) {
      const chunk = this.#chunks[0]!
      const used = Math.min(chunk.byteLength, count - filled)
      result.set(chunk.subarray(0, used), filled)
      filled += used
      if (used === chunk.byteLength) this.#chunks.shift()
      else this.#chunks[0] = chunk.subarray(used)
    }
    this.#bufferedBytes -= count
    return result
  }

  /** Records the first failure and returns it (the one read() keeps throwing). */
  #fail(error: ClusterError): ClusterError {
    if (this.#failure !== null) return this.#failure
    this.#failure = error
    this.#chunks = []
    this.#bufferedBytes = 0
    this.#removeListeners()
    if (error.code === 'BAD_MESSAGE') this.#stream.abort(error)
    this.#wake?.()
    return error
  }

  #removeListeners(): void {
    this.#stream.removeEventListener('message', this.#onMessage)
    this.#stream.removeEventListener('remoteCloseWrite', this.#onRemoteEnd)
    this.#stream.removeEventListener('close', this.#onClose)
  }

  readonly #onMessage = (event: StreamMessageEvent): void => {
    const bytes = toBytes(event.data)
    this.#chunks.push(bytes)
    this.#bufferedBytes += bytes.byteLength
    const limit = (this.#frameBytes ?? this.#spec.frameBytesMax) + this.#spec.readAheadBytesMax
    if (this.#bufferedBytes > FRAME_PREFIX_BYTES + limit)
      this.#fail(
        ClusterError.badMessage(
          `${this.#spec.name} peer sent ${this.#bufferedBytes} bytes ahead of what was read`,
        ),
      )
    this.#wake?.()
  }

  readonly #onRemoteEnd = (): void => {
    this.#remoteEnded = true
    this.#wake?.()
  }

  readonly #onClose = (event: StreamCloseEvent): void => {
    if (event.error === undefined) this.#onRemoteEnd()
    else this.#fail(ClusterError.closed(`${this.#spec.name} stream reset: ${event.error.message}`))
  }
}
