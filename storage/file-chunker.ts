// Reading a file once into its chunks and its whole-file hash, as the ingest needs, so
// that little of the work waits on the rest: the next read runs while the current buffer
// is chunked, and chunks are stored several at a time meanwhile. Chunks are views into the
// read buffers, never copies (copying every chunk out cost more than hashing it): a buffer
// is read into again only once every chunk in it is stored.
//
// A file whose first read fills the buffer is hashed in the hashing worker
// (hash-worker-client.ts): the read buffers are SharedArrayBuffers, this thread runs the
// gear loop and finds the cut points, and the worker hashes the chunks and the whole file
// in the same memory, while this thread cuts the next buffer; a turn's chunks are stored
// once the worker has answered for them. A smaller file (most files of a scan) is hashed
// here, as the round trip to the worker would cost it more than it saves. Measured on two
// cores, a new 256 MiB file: this thread's CPU went from 570 to 340 ms and the ingest from
// 0.94 to 0.74 s; what is left is mostly both cores being full (the worker's 300 ms, the
// kernel's copies on the thread pool 400 ms), not this thread.
//
// Hashing chunks on the thread pool (Web Crypto's digest) instead was measured and was
// no faster on two cores: it copied every chunk, and the pool's hashing took the core the
// kernel's copies need.
import { createHash } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import { CHUNK_SIZE_MAX_BYTES } from './chunk-types.ts'
import {
  ContentChunker,
  findChunkEnds,
  hashedChunk,
  type FileHash,
  type HashedChunk,
} from './chunker.ts'
import {
  TURNS_HASHING_PER_FILE_MAX,
  startFileHashing,
  type FileHashing,
  type HashedTurn,
} from './hash-worker-client.ts'
import type { ChunkReference } from './version-record.ts'

/** Bytes one read asks for. */
export const FILE_READ_BYTES = 4 * 1024 * 1024
/**
 * Each read buffer begins with room for the unfinished chunk carried over from the buffer
 * before (shorter than the maximum), so a chunk never has to be assembled from pieces.
 */
const CARRY_BYTES_MAX = CHUNK_SIZE_MAX_BYTES
/**
 * Buffers one file cycles through: one being read ahead, one being chunked, one whose
 * chunks the worker is hashing, one whose chunks are being stored.
 */
export const READ_BUFFERS_PER_FILE = 4
/** Chunks of one file being stored at once (each holds only a view, no copy). */
export const CHUNKS_IN_FLIGHT_MAX = 64
/**
 * Buffer sets kept for the next file: a fresh set per small file made garbage collection
 * most of the time of a scan of many small files.
 */
const SPARE_BUFFER_SETS_MAX = 2
const spareBufferSets: Buffer[][] = []

// A buffer is read into again READ_BUFFERS_PER_FILE turns later: by then the worker must
// have answered for it, which it has for all but the turns still out.
assert(READ_BUFFERS_PER_FILE > TURNS_HASHING_PER_FILE_MAX, 'a buffer is free when read into')

export interface ChunkFileOptions {
  /** Stops the read between two reads of the file. */
  readonly signal?: AbortSignal
  /** The file's size when last looked at: a small file is read in one read, into a small buffer. */
  readonly sizeHintBytes?: number
}

/**
 * A file expected to be at most this big is read whole in one read into a buffer of its own
 * and cut in memory: a scan reads many small files at once, and a set of read buffers each
 * (READ_BUFFERS_PER_FILE of 4 MiB) made allocation and page faults most of its time.
 */
export const SMALL_FILE_BYTES_MAX = 1024 * 1024
/** Small-file buffers kept for the next files (a scan reads up to 16 files at once). */
const SPARE_SMALL_BUFFERS_MAX = 16
const spareSmallBuffers: Buffer[] = []

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

/** Work that uses a read turn's buffer: a chunk being stored, or the worker hashing the turn. */
interface TurnWork<T = unknown> {
  readonly turn: number
  readonly settled: Promise<T>
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
  if (options.sizeHintBytes !== undefined && options.sizeHintBytes <= SMALL_FILE_BYTES_MAX) {
    // Null when the file has grown past a small one since: then it is read as a big one.
    const small = await chunkSmallFile(handle, name, storeChunk).catch(async (error: unknown) => {
      if (typeof source === 'string') await handle.close()
      throw error
    })
    if (small !== null) {
      if (typeof source === 'string') await handle.close()
      return small
    }
  }
  const read = new FileRead(handle, name, spareBufferSets.pop() ?? newBufferSet(), storeChunk)
  let hashing: FileHashing | null = null
  let stored: Promise<void> | null = null
  try {
    const firstBytesRead = await read.pendingRead
    if (firstBytesRead === FILE_READ_BYTES) hashing = startFileHashing(name)
    const file =
      hashing === null
        ? await chunkHere(read, options)
        : await chunkInWorker(read, hashing, options)
    stored = Promise.all(read.stores.splice(0).map((work) => work.settled)).then(() => undefined)
    stored.catch(() => undefined) // the caller's to await; until then, not unhandled
    return { file, stored }
  } finally {
    hashing?.end()
    if (typeof source === 'string') await handle.close()
    // Nothing may still read into or from the buffers when they go back for the next file.
    // A failed read waits for the chunks in flight; a whole one leaves them to `stored`.
    const done = Promise.allSettled([
      read.pendingRead,
      stored,
      ...read.stores.map((work) => work.settled),
      ...read.hashings.map((work) => work.settled),
    ])
    const release = (): void => {
      if (spareBufferSets.length < SPARE_BUFFER_SETS_MAX) spareBufferSets.push(read.buffers)
    }
    if (stored === null) {
      await done
      release()
    } else void done.then(release)
  }
}

/**
 * Reads a small file in one read (one byte more than the limit, to see it was the whole
 * file), hashes and cuts it here, and stores its chunks; the buffer is kept for the next
 * small file once they are stored. Null when the file is bigger than a small one.
 */
async function chunkSmallFile(
  handle: FileHandle,
  name: string,
  storeChunk: StoreChunk,
): Promise<ReadFile | null> {
  const buffer = spareSmallBuffers.pop() ?? Buffer.allocUnsafeSlow(SMALL_FILE_BYTES_MAX + 1)
  const release = (): void => {
    if (spareSmallBuffers.length < SPARE_SMALL_BUFFERS_MAX) spareSmallBuffers.push(buffer)
  }
  let bytesRead: number
  try {
    ;({ bytesRead } = await handle.read(buffer, 0, buffer.length, 0))
  } catch (error) {
    release()
    throw fileError(error, name)
  }
  if (bytesRead > SMALL_FILE_BYTES_MAX) {
    release()
    return null
  }
  const bytes = buffer.subarray(0, bytesRead)
  const fileHash = createHash('sha256').update(bytes).digest('hex') as FileHash
  const chunks: ChunkReference[] = []
  const stores: Promise<unknown>[] = []
  let start = 0
  for (const end of findChunkEnds(bytes)) {
    const chunk = hashedChunk(bytes.subarray(start, end))
    start = end
    chunks.push({ hash: chunk.hash, lengthBytes: chunk.bytes.length })
    stores.push(storeChunk(chunk))
  }
  assert(stores.length <= CHUNKS_IN_FLIGHT_MAX, 'a small file has a bounded number of chunks')
  const stored = Promise.all(stores).then(() => undefined)
  stored.catch(() => undefined) // the caller's to await; until then, not unhandled
  void Promise.allSettled(stores).then(release)
  return { file: { fileHash, sizeBytes: bytesRead, chunks }, stored }
}

/** Hashes the file on this thread, chunk by chunk as the cuts are found. */
async function chunkHere(read: FileRead, options: ChunkFileOptions): Promise<ChunkedFile> {
  const fileHash = createHash('sha256')
  const cutter = new TurnCutter()
  for (let turn = 0; ; turn++) {
    options.signal?.throwIfAborted()
    const { buffer, bytesRead, atEnd } = await read.nextTurn(turn)
    fileHash.update(buffer.subarray(CARRY_BYTES_MAX, CARRY_BYTES_MAX + bytesRead))
    const chunkBounds = cutter.cut(buffer, bytesRead, atEnd)
    for (let index = 1; index < chunkBounds.length; index++) {
      const bytes = buffer.subarray(chunkBounds[index - 1], chunkBounds[index])
      await read.store(turn, hashedChunk(bytes))
    }
    if (atEnd) {
      const digest = fileHash.digest('hex') as FileHash
      return { fileHash: digest, sizeBytes: cutter.streamOffset, chunks: read.chunks }
    }
  }
}

/**
 * Hashes the file in the worker: each turn is cut here and posted, and while the worker
 * hashes it, the oldest turn out (which the worker has had a turn or more to hash) is
 * stored; once the file is read, every turn still out is.
 */
async function chunkInWorker(
  read: FileRead,
  hashing: FileHashing,
  options: ChunkFileOptions,
): Promise<ChunkedFile> {
  const cutter = new TurnCutter()
  const out: TurnWork<HashedTurn>[] = []
  for (let turn = 0; ; turn++) {
    options.signal?.throwIfAborted()
    const { buffer, bytesRead, atEnd } = await read.nextTurn(turn)
    const chunkBounds = cutter.cut(buffer, bytesRead, atEnd)
    const fresh = { start: CARRY_BYTES_MAX, end: CARRY_BYTES_MAX + bytesRead }
    const answered = hashing.hashTurn(buffer, fresh.start, fresh.end, chunkBounds, atEnd)
    answered.catch(() => undefined) // awaited below, unless a read fails first
    read.hashings.push({ turn, settled: answered })
    out.push({ turn, settled: answered })
    while (out.length === TURNS_HASHING_PER_FILE_MAX || (atEnd && out.length > 0)) {
      const oldest = out.shift()!
      const hashed = await oldest.settled
      await read.storeAll(oldest.turn, hashed)
      assert(
        (hashed.fileHash !== null) === (atEnd && out.length === 0),
        'the last turn ends the hash',
      )
      if (hashed.fileHash !== null)
        return { fileHash: hashed.fileHash, sizeBytes: cutter.streamOffset, chunks: read.chunks }
    }
  }
}

/**
 * Where one turn's chunks begin and end in its buffer. It puts the unfinished chunk carried
 * from the buffer before in the room at the start of this one, and runs the gear loop over
 * the fresh bytes.
 */
class TurnCutter {
  /** Bytes of the file cut so far: the stream offset of the next read's first byte. */
  streamOffset = 0
  private readonly chunker = new ContentChunker()
  private carry: Buffer = Buffer.alloc(0)

  /** The first chunk's start, then each chunk's end, as offsets in `buffer`; empty when no chunk ends. */
  cut(buffer: Buffer, bytesRead: number, atEnd: boolean): number[] {
    const fresh = buffer.subarray(CARRY_BYTES_MAX, CARRY_BYTES_MAX + bytesRead)
    const chunkStart = CARRY_BYTES_MAX - this.carry.length
    buffer.set(this.carry, chunkStart)
    const chunkEnds = this.chunker.push(fresh)
    const last = atEnd ? this.chunker.finish() : null
    if (last !== null) chunkEnds.push(last)
    const bufferStreamOffset = this.streamOffset - CARRY_BYTES_MAX
    const chunkBounds =
      chunkEnds.length === 0
        ? []
        : [chunkStart, ...chunkEnds.map((end) => end - bufferStreamOffset)]
    this.carry = buffer.subarray(chunkBounds.at(-1) ?? chunkStart, CARRY_BYTES_MAX + bytesRead)
    assert(this.carry.length < CARRY_BYTES_MAX, 'an unfinished chunk is shorter than the maximum')
    assert(!atEnd || this.carry.length === 0, 'the last turn ends the last chunk')
    this.streamOffset += bytesRead
    return chunkBounds
  }
}

/** One file's read: its buffers, the read ahead, and the work still using each turn's buffer. */
class FileRead {
  readonly buffers: Buffer[]
  readonly chunks: ChunkReference[] = []
  /** Chunks being stored, in turn order. */
  readonly stores: TurnWork[] = []
  /** Turns the worker has not answered for yet, in turn order. */
  readonly hashings: TurnWork[] = []
  pendingRead: Promise<number>
  private readonly handle: FileHandle
  private readonly name: string
  private readonly storeChunk: StoreChunk
  /** File offset of the next read. */
  private readPosition = 0

  constructor(handle: FileHandle, name: string, buffers: Buffer[], storeChunk: StoreChunk) {
    this.handle = handle
    this.name = name
    this.buffers = buffers
    this.storeChunk = storeChunk
    this.pendingRead = this.readInto(buffers[0]!, 0)
  }

  /**
   * Waits for `turn`'s read and, unless it was the last, starts the next one. A regular
   * file reads short only at its end: no read is needed to find it (a file that grows
   * meanwhile is the caller's to notice, as the ingest does by its size).
   */
  async nextTurn(turn: number): Promise<{ buffer: Buffer; bytesRead: number; atEnd: boolean }> {
    const buffer = this.bufferOf(turn)
    const bytesRead = await this.pendingRead
    this.readPosition += bytesRead
    const atEnd = bytesRead < FILE_READ_BYTES
    if (!atEnd) {
      // The next buffer held the chunks of an earlier turn: they must be done with it, the
      // room at its start included, before it is read or carried into.
      const earlierTurnMax = turn + 1 - READ_BUFFERS_PER_FILE
      await settleTurns(this.hashings, earlierTurnMax)
      await settleTurns(this.stores, earlierTurnMax)
      this.pendingRead = this.readInto(this.bufferOf(turn + 1), this.readPosition)
    }
    return { buffer, bytesRead, atEnd }
  }

  /** Stores a chunk of `turn`'s buffer, waiting first if CHUNKS_IN_FLIGHT_MAX are being stored. */
  async store(turn: number, chunk: HashedChunk): Promise<void> {
    this.chunks.push({ hash: chunk.hash, lengthBytes: chunk.bytes.length })
    const settled = this.storeChunk(chunk)
    settled.catch(() => undefined) // awaited later, unless the read fails first
    this.stores.push({ turn, settled })
    assert(this.stores.length <= CHUNKS_IN_FLIGHT_MAX, 'a bounded number of chunks in flight')
    if (this.stores.length === CHUNKS_IN_FLIGHT_MAX) await this.stores.shift()!.settled
  }

  async storeAll(turn: number, hashed: HashedTurn): Promise<void> {
    for (const chunk of hashed.chunks) await this.store(turn, chunk)
  }

  private bufferOf(turn: number): Buffer {
    return this.buffers[turn % READ_BUFFERS_PER_FILE]!
  }

  /** Reads up to FILE_READ_BYTES at `position` into the buffer after its carry room. */
  private readInto(buffer: Buffer, position: number): Promise<number> {
    const read = this.handle.read(buffer, CARRY_BYTES_MAX, FILE_READ_BYTES, position).then(
      ({ bytesRead }) => bytesRead,
      (error: unknown) => {
        throw fileError(error, this.name)
      },
    )
    read.catch(() => undefined) // awaited by the next turn, unless the read fails first
    return read
  }
}

/** Waits for, and removes, the works of turns up to `turnMax` from the front of `works`. */
async function settleTurns(works: TurnWork[], turnMax: number): Promise<void> {
  while (works.length > 0 && works[0]!.turn <= turnMax) await works.shift()!.settled
}

function newBufferSet(): Buffer[] {
  // Shared, so that the hashing worker reads the same memory; one per buffer, so that a
  // chunk's byteOffset is its offset in its buffer.
  return Array.from({ length: READ_BUFFERS_PER_FILE }, () =>
    Buffer.from(new SharedArrayBuffer(CARRY_BYTES_MAX + FILE_READ_BYTES)),
  )
}

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r')
  } catch (error) {
    throw fileError(error, path)
  }
}

function fileError(error: unknown, name: string): ClusterError {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return ClusterError.notFound(`cannot chunk ${name}: it does not exist`)
  return ClusterError.io(`cannot read ${name} to chunk it: ${String(code ?? error)}`, error)
}
