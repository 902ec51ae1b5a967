// Reading a file once into its chunks and its whole-file hash, as the ingest needs, so
// that little of the work waits on the rest: the next read runs while the current buffer
// is chunked and hashed, and chunks are stored several at a time meanwhile. Chunks are
// views into the read buffers, never copies (copying every chunk out cost more than
// hashing it): a buffer is read into again only once every chunk in it is stored.
//
// Hashing chunks on the thread pool (Web Crypto's digest) instead was measured and was
// no faster on two cores: the pool's hashing took the core the kernel's copies need.
import { createHash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import { CHUNK_SIZE_MAX_BYTES } from './chunk-types.ts'
import { ContentChunker, hashedChunk, type FileHash, type HashedChunk } from './chunker.ts'
import type { ChunkReference } from './version-record.ts'

/** Bytes one read asks for. */
export const FILE_READ_BYTES = 4 * 1024 * 1024
/**
 * Each read buffer begins with room for the unfinished chunk carried over from the buffer
 * before (shorter than the maximum), so a chunk never has to be assembled from pieces.
 */
const CARRY_BYTES_MAX = CHUNK_SIZE_MAX_BYTES
/** Buffers one file cycles through: one being read ahead, one being chunked, one whose chunks are still being hashed and stored. */
export const READ_BUFFERS_PER_FILE = 3
/** Chunks of one file being stored at once (each holds only a view, no copy). */
export const CHUNKS_IN_FLIGHT_MAX = 64
/**
 * Buffer sets kept for the next file: a fresh set per small file made garbage collection
 * most of the time of a scan of many small files.
 */
const SPARE_BUFFER_SETS_MAX = 2
const spareBufferSets: Buffer[][] = []

export interface ChunkFileOptions {
  /** Stops the read between two reads of the file. */
  readonly signal?: AbortSignal
}

/** A file or an open handle; a handle is read from offset 0 to its end and left open. */
export type FileSource = string | FileHandle

export interface ChunkedFile {
  readonly fileHash: FileHash
  readonly sizeBytes: number
  /** The chunks in file order (a hash repeats when the content does). */
  readonly chunks: readonly ChunkReference[]
}

/**
 * Where a chunk's bytes go. The bytes stay as they are until the returned promise settles,
 * and no longer: they are a view into a buffer that is read into again afterwards. A
 * rejection stops the read and is thrown by chunkAndHashFile.
 */
export type StoreChunk = (chunk: HashedChunk) => Promise<unknown>

/** A chunk being stored, and the read turn whose buffer holds its bytes. */
interface ChunkWork {
  readonly turn: number
  readonly settled: Promise<unknown>
}

/** A file read to its end, and its chunks' storing, which may still be going on. */
export interface ReadFile {
  readonly file: ChunkedFile
  /** Settles once every chunk is stored; rejects as the first failed store did. */
  readonly stored: Promise<void>
}

/**
 * Reads a file once and gives both its chunks (to `storeChunk`, in order, several at a
 * time) and its whole-file hash and chunk list. It returns as soon as the last read is
 * done, so that the caller can look at the file again while the last chunks are stored.
 */
export async function chunkAndHashFile(
  source: FileSource,
  options: ChunkFileOptions,
  storeChunk: StoreChunk,
): Promise<ReadFile> {
  const handle = typeof source === 'string' ? await openForReading(source) : source
  const name = typeof source === 'string' ? source : `file descriptor ${handle.fd}`
  const buffers = spareBufferSets.pop() ?? newBufferSet()
  const works: ChunkWork[] = []
  let pendingRead = readAt(handle, buffers[0]!, 0, name)
  let stored: Promise<void> | null = null
  try {
    const fileHash = createHash('sha256')
    const chunker = new ContentChunker()
    const chunks: ChunkReference[] = []
    let carry: Buffer = Buffer.alloc(0)
    let streamOffset = 0 // of the first byte the current read brought
    for (let turn = 0; ; turn++) {
      options.signal?.throwIfAborted()
      const buffer = buffers[turn % READ_BUFFERS_PER_FILE]!
      const bytesRead = await pendingRead
      // A regular file reads short only at its end: no read is needed to find it (a file
      // that grows meanwhile is the caller's to notice, as the ingest does by its size).
      const atEnd = bytesRead < FILE_READ_BYTES
      if (!atEnd) {
        // The next buffer held the chunks of two turns ago: they must be done with it,
        // the room at its start included, before it is read or carried into.
        while (works.length > 0 && works[0]!.turn <= turn + 1 - READ_BUFFERS_PER_FILE)
          await works.shift()!.settled
        const next = buffers[(turn + 1) % READ_BUFFERS_PER_FILE]!
        pendingRead = readAt(handle, next, streamOffset + bytesRead, name)
      }
      const fresh = buffer.subarray(CARRY_BYTES_MAX, CARRY_BYTES_MAX + bytesRead)
      fileHash.update(fresh)
      buffer.set(carry, CARRY_BYTES_MAX - carry.length)
      const bufferStreamOffset = streamOffset - CARRY_BYTES_MAX
      let chunkStart = CARRY_BYTES_MAX - carry.length
      const chunkEnds = chunker.push(fresh)
      const last = atEnd ? chunker.finish() : null
      if (last !== null) chunkEnds.push(last)
      for (const end of chunkEnds) {
        const bytes = buffer.subarray(chunkStart, end - bufferStreamOffset)
        chunkStart = end - bufferStreamOffset
        const chunk = hashedChunk(bytes)
        chunks.push({ hash: chunk.hash, lengthBytes: bytes.length })
        const settled = storeChunk(chunk)
        settled.catch(() => undefined) // awaited below, unless the read fails first
        works.push({ turn, settled })
        if (works.length >= CHUNKS_IN_FLIGHT_MAX) await works.shift()!.settled
      }
      carry = buffer.subarray(chunkStart, CARRY_BYTES_MAX + bytesRead)
      assert(carry.length < CARRY_BYTES_MAX, 'an unfinished chunk is shorter than the maximum')
      streamOffset += bytesRead
      if (atEnd) break
    }
    stored = Promise.all(works.splice(0).map((work) => work.settled)).then(() => undefined)
    stored.catch(() => undefined) // the caller's to await; until then, not unhandled
    const file = { fileHash: fileHash.digest('hex') as FileHash, sizeBytes: streamOffset, chunks }
    return { file, stored }
  } finally {
    if (typeof source === 'string') await handle.close()
    // Nothing may still read into or from the buffers when they go back for the next file.
    // A failed read waits for the chunks in flight; a whole one leaves them to `stored`.
    const done = Promise.allSettled([pendingRead, stored, ...works.map((work) => work.settled)])
    const release = (): void => {
      if (spareBufferSets.length < SPARE_BUFFER_SETS_MAX) spareBufferSets.push(buffers)
    }
    if (stored === null) {
      await done
      release()
    } else void done.then(release)
  }
}

function newBufferSet(): Buffer[] {
  return Array.from({ length: READ_BUFFERS_PER_FILE }, () =>
    Buffer.allocUnsafe(CARRY_BYTES_MAX + FILE_READ_BYTES),
  )
}

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r')
  } catch (error) {
    throw fileError(error, path)
  }
}

/** Reads up to FILE_READ_BYTES at `position` into the buffer after its carry room. */
function readAt(
  handle: FileHandle,
  buffer: Buffer,
  position: number,
  name: string,
): Promise<number> {
  const read = handle.read(buffer, CARRY_BYTES_MAX, FILE_READ_BYTES, position).then(
    ({ bytesRead }) => bytesRead,
    (error: unknown) => {
      throw fileError(error, name)
    },
  )
  read.catch(() => undefined) // awaited by the next turn, unless the read fails first
  return read
}

function fileError(error: unknown, name: string): ClusterError {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return ClusterError.notFound(`cannot chunk ${name}: it does not exist`)
  return ClusterError.io(`cannot read ${name} to chunk it: ${String(code ?? error)}`, error)
}
