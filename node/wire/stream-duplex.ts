// A Node Duplex over a libp2p 3 stream, for code that wants a plain stream (Hypercore's
// replicate() pipes to one). Back-pressure holds both ways: writes wait for the stream
// to drain when send() returns false, and the stream is paused while the reading side
// is full (safe because the muxer's read buffer is twice the window it grants, see
// libp2p-options.ts). The remote closing its side ends the readable side; a reset
// destroys the duplex, and destroying the duplex resets the stream.
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { Duplex } from 'node:stream'
import { ClusterError } from '../../consensus/cluster-error.ts'

export class StreamDuplex extends Duplex {
  readonly #stream: Stream

  /** `initialBytes`: what an earlier reader of the stream received but did not use. */
  constructor(stream: Stream, initialBytes?: Uint8Array) {
    super({ allowHalfOpen: true })
    this.#stream = stream
    if (initialBytes !== undefined && initialBytes.byteLength > 0) this.push(initialBytes)
    stream.addEventListener('message', this.#onMessage)
    stream.addEventListener('remoteCloseWrite', this.#onRemoteCloseWrite)
    stream.addEventListener('close', this.#onClose)
    if (stream.remoteWriteStatus !== 'writable') this.push(null)
  }

  override _read(): void {
    if (this.#stream.readStatus === 'paused') this.#stream.resume()
  }

  override _write(
    chunk: Uint8Array,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    try {
      if (this.#stream.send(chunk)) callback()
      else this.#stream.onDrain().then(() => callback(), callback)
    } catch (error) {
      callback(ClusterError.closed(`stream closed: ${(error as Error).message}`))
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#stream.close().then(() => callback(), callback)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#stream.removeEventListener('message', this.#onMessage)
    this.#stream.removeEventListener('remoteCloseWrite', this.#onRemoteCloseWrite)
    this.#stream.removeEventListener('close', this.#onClose)
    // Unread bytes would pile up in a stream nobody listens to: end it for both sides.
    if (this.#stream.status === 'open' || this.#stream.status === 'closing')
      this.#stream.abort(error ?? new Error('duplex destroyed'))
    callback(error)
  }

  readonly #onMessage = (event: StreamMessageEvent): void => {
    const bytes = event.data instanceof Uint8Array ? event.data : event.data.subarray()
    if (!this.push(bytes) && this.#stream.readStatus === 'readable') this.#stream.pause()
  }

  readonly #onRemoteCloseWrite = (): void => {
    this.push(null)
  }

  readonly #onClose = (event: StreamCloseEvent): void => {
    if (event.error !== undefined)
      this.destroy(ClusterError.closed(`stream reset: ${event.error.message}`))
    else this.push(null)
  }
}
