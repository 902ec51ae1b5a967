// FastCDC content-defined chunking (Xia et al., "FastCDC", USENIX ATC 2016): a gear
// rolling hash, no hashing below the minimum size, and normalised chunking with two
// masks (a stricter one before the average size, a looser one after it), so that
// chunk sizes cluster around the average and a local edit moves at most a chunk or two
// of boundaries. Chunk boundaries are part of the stored format: every replica must cut
// the same file the same way, in every version of this program, or deduplication
// silently stops working. Nothing here may change without a new format version.
import { createHash, type Hash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import {
  CHUNK_SIZE_AVERAGE_BYTES,
  CHUNK_SIZE_MAX_BYTES,
  CHUNK_SIZE_MIN_BYTES,
  type Chunk,
  type ChunkHash,
} from './chunk-types.ts'

/** The SHA-256 of a whole file's content, as 64 lowercase hex characters. */
export type FileHash = string & { readonly __brand: 'FileHash' }

/**
 * The gear table: entry i is the first four bytes (big-endian) of
 * SHA-256("clusterreplica-gear-v1:" + i). Derived rather than pasted, so that it is
 * reproducible anywhere from this one line; pinned by a test.
 */
const GEAR_TABLE_SEED = 'clusterreplica-gear-v1:'
const GEAR = new Int32Array(256)
for (let index = 0; index < GEAR.length; index++) {
  GEAR[index] = createHash('sha256').update(`${GEAR_TABLE_SEED}${index}`).digest().readInt32BE(0)
}

// A 32-bit gear hash shifts one bit per byte, so bit k depends on the last k + 1 bytes:
// the masks use the top bits, which see the widest window (32 bytes). Below the average
// size a cut has probability 2^-16 per byte (log2 of the average); from the average on,
// 2^-15, so that almost no chunk reaches the maximum. Cuts made in the loose region and
// forced cuts at the maximum depend on where the chunk began, so they carry an edit's
// shift forward; this pair keeps both rare. Measured on 2 x 64 MiB of random data with
// 4,000 inserts of 4 KiB: 94.7 % changed one chunk, 4.9 % two, 0.4 % three, none more,
// mean chunk 66 KiB; FastCDC's level-2 pair (18 and 14 bits) changed three to ten chunks
// after 6.8 % of the inserts. The strict mask's bits include the loose mask's.
const MASK_STRICT = 0xffff0000 | 0 // 16 bits, used while the chunk is shorter than the average
const MASK_LOOSE = 0xfffe0000 | 0 // 15 bits, used from the average size up to the maximum

/**
 * Finds chunk boundaries in a stream fed piece by piece. Pure: it keeps no bytes, only
 * the position within the current chunk and the rolling hash, so any split of the same
 * stream gives the same boundaries. A chunk ends after the first byte, at or past the
 * minimum size, whose hash has the mask's bits clear, or at the maximum size.
 */
export class ContentChunker {
  private streamOffset = 0
  private chunkLengthBytes = 0
  private fingerprint = 0

  /** Feeds the next bytes of the stream; returns the stream offsets where chunks ended inside them. */
  push(bytes: Uint8Array): number[] {
    const chunkEnds: number[] = []
    let position = 0
    let length = this.chunkLengthBytes
    let fingerprint = this.fingerprint
    while (position < bytes.length) {
      if (length < CHUNK_SIZE_MIN_BYTES) {
        const skipped = Math.min(CHUNK_SIZE_MIN_BYTES - length, bytes.length - position)
        length += skipped
        position += skipped
        continue
      }
      const strict = length < CHUNK_SIZE_AVERAGE_BYTES
      const mask = strict ? MASK_STRICT : MASK_LOOSE
      const lengthLimit = strict ? CHUNK_SIZE_AVERAGE_BYTES : CHUNK_SIZE_MAX_BYTES
      const stop = Math.min(bytes.length, position + lengthLimit - length)
      let index = position
      let found = false
      for (; index < stop; index++) {
        fingerprint = ((fingerprint << 1) + GEAR[bytes[index]!]!) | 0
        if ((fingerprint & mask) === 0) {
          found = true
          index++
          break
        }
      }
      length += index - position
      position = index
      if (found || length === CHUNK_SIZE_MAX_BYTES) {
        chunkEnds.push(this.streamOffset + position)
        length = 0
        fingerprint = 0
      }
    }
    assert(length < CHUNK_SIZE_MAX_BYTES, 'a chunk never outgrows the maximum size')
    this.streamOffset += bytes.length
    this.chunkLengthBytes = length
    this.fingerprint = fingerprint
    return chunkEnds
  }

  /** Ends the stream: the offset where the last chunk ends, or null when no bytes are pending. */
  finish(): number | null {
    const pending = this.chunkLengthBytes
    this.chunkLengthBytes = 0
    this.fingerprint = 0
    return pending > 0 ? this.streamOffset : null
  }
}

/** The end offset of every chunk of `bytes`, as one stream. */
export function findChunkEnds(bytes: Uint8Array): number[] {
  const chunker = new ContentChunker()
  const chunkEnds = chunker.push(bytes)
  const last = chunker.finish()
  if (last !== null) chunkEnds.push(last)
  return chunkEnds
}

export function hashChunk(bytes: Uint8Array): ChunkHash {
  return createHash('sha256').update(bytes).digest('hex') as ChunkHash
}

/** Cuts bytes held in memory into chunks (views into `bytes`, not copies). */
export function chunkBytes(bytes: Uint8Array): Chunk[] {
  let start = 0
  return findChunkEnds(bytes).map((end) => {
    const chunk = bytes.subarray(start, end)
    start = end
    return { hash: hashChunk(chunk), bytes: chunk }
  })
}

/**
 * How much of a file is held at once. It must hold a whole chunk plus room for the next
 * read, so that a chunk never has to be assembled from pieces.
 */
export const FILE_READ_BUFFER_BYTES = 4 * 1024 * 1024
assert(FILE_READ_BUFFER_BYTES >= 2 * CHUNK_SIZE_MAX_BYTES, 'the read buffer holds a chunk and more')
/**
 * Read buffers kept for the next file: a fresh 4 MiB buffer per small file made garbage
 * collection most of the time of a scan of many small files. Chunks are copied out of the
 * buffer, so nothing refers to it once a read ends.
 */
const SPARE_READ_BUFFERS_MAX = 4
const spareReadBuffers: Buffer[] = []

export interface ChunkFileOptions {
  /** Stops the read between two reads of the file. */
  readonly signal?: AbortSignal
}

/** A file or an open handle; a handle is read from offset 0 to its end and left open. */
export type FileSource = string | FileHandle

/** Reads a file once, yielding its chunks (each a copy) in order. */
export async function* chunkFile(
  source: FileSource,
  options: ChunkFileOptions = {},
): AsyncGenerator<Chunk, void, undefined> {
  yield* readChunks(source, options, null)
}

export interface ChunkedFile {
  readonly fileHash: FileHash
  readonly sizeBytes: number
  /** The chunk hashes in file order (a hash repeats when the content does). */
  readonly chunkHashes: readonly ChunkHash[]
}

/**
 * Reads a file once and gives both its chunks (to `onChunk`, one at a time, in order)
 * and the whole-file hash, as the ingest needs.
 */
export async function chunkAndHashFile(
  source: FileSource,
  options: ChunkFileOptions,
  onChunk: (chunk: Chunk) => Promise<void> | void,
): Promise<ChunkedFile> {
  const fileHash = createHash('sha256')
  const chunkHashes: ChunkHash[] = []
  let sizeBytes = 0
  for await (const chunk of readChunks(source, options, fileHash)) {
    chunkHashes.push(chunk.hash)
    sizeBytes += chunk.bytes.length
    await onChunk(chunk)
  }
  return { fileHash: fileHash.digest('hex') as FileHash, sizeBytes, chunkHashes }
}

async function* readChunks(
  source: FileSource,
  options: ChunkFileOptions,
  fileHash: Hash | null,
): AsyncGenerator<Chunk, void, undefined> {
  const handle = typeof source === 'string' ? await openForReading(source) : source
  const buffer = spareReadBuffers.pop() ?? Buffer.allocUnsafe(FILE_READ_BUFFER_BYTES)
  try {
    const chunker = new ContentChunker()
    let bufferStreamOffset = 0 // the stream offset of buffer[0]
    let chunkStart = 0 // index in buffer where the current chunk begins
    let filled = 0
    for (;;) {
      options.signal?.throwIfAborted()
      // Keep the unfinished chunk (shorter than the maximum) and read after it.
      buffer.copyWithin(0, chunkStart, filled)
      bufferStreamOffset += chunkStart
      filled -= chunkStart
      chunkStart = 0
      const bytesRead = await readAt(handle, buffer, filled, bufferStreamOffset + filled, source)
      const fresh = buffer.subarray(filled, filled + bytesRead)
      fileHash?.update(fresh)
      filled += bytesRead
      const chunkEnds = bytesRead > 0 ? chunker.push(fresh) : [chunker.finish()]
      for (const end of chunkEnds) {
        if (end === null) continue
        const bytes = Buffer.from(buffer.subarray(chunkStart, end - bufferStreamOffset))
        chunkStart = end - bufferStreamOffset
        yield { hash: hashChunk(bytes), bytes }
      }
      if (bytesRead === 0) return
    }
  } finally {
    if (spareReadBuffers.length < SPARE_READ_BUFFERS_MAX) spareReadBuffers.push(buffer)
    if (typeof source === 'string') await handle.close()
  }
}

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r')
  } catch (error) {
    throw fileError(error, path)
  }
}

async function readAt(
  handle: FileHandle,
  buffer: Buffer,
  bufferOffset: number,
  position: number,
  source: FileSource,
): Promise<number> {
  try {
    const { bytesRead } = await handle.read(
      buffer,
      bufferOffset,
      buffer.length - bufferOffset,
      position,
    )
    return bytesRead
  } catch (error) {
    throw fileError(error, typeof source === 'string' ? source : `file descriptor ${handle.fd}`)
  }
}

function fileError(error: unknown, name: string): ClusterError {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return ClusterError.notFound(`cannot chunk ${name}: it does not exist`)
  return ClusterError.io(`cannot read ${name} to chunk it: ${String(code ?? error)}`, error)
}
