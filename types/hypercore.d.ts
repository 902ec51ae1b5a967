// The subset of Hypercore 11 that storage/ uses (hypercore ships no types).
declare module 'hypercore' {
  import type { EventEmitter } from 'node:events'
  import type { Duplex } from 'node:stream'

  interface GetOptions {
    /** Wait for the block to be downloaded (default true); false returns null if absent. */
    wait?: boolean
    timeout?: number
  }

  interface DownloadRange {
    start?: number
    end?: number
    linear?: boolean
  }

  interface Download {
    done(): Promise<void>
    destroy(): void
  }

  class Hypercore extends EventEmitter {
    static readonly MAX_SUGGESTED_BLOCK_SIZE: number
    /** The public key (null until ready). */
    readonly key: Buffer
    readonly discoveryKey: Buffer
    readonly length: number
    readonly contiguousLength: number
    readonly writable: boolean
    readonly readable: boolean
    readonly closed: boolean
    readonly fork: number
    ready(): Promise<void>
    append(
      blocks: Uint8Array | readonly Uint8Array[],
    ): Promise<{ length: number; byteLength: number }>
    get(index: number, options?: GetOptions): Promise<Buffer | null>
    has(start: number, end?: number): Promise<boolean>
    update(options?: { wait?: boolean }): Promise<boolean>
    /** The Merkle tree hash of the first `length` blocks; `length` must not exceed `this.length`. */
    treeHash(length?: number): Promise<Buffer>
    download(range?: DownloadRange): Download
    replicate(isInitiator: boolean, options?: Record<string, unknown>): Duplex
    close(): Promise<void>
  }

  export = Hypercore
}
