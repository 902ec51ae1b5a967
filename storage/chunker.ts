// FastCDC content-defined chunking (Xia et al., "FastCDC", USENIX ATC 2016): a gear
// rolling hash, no hashing below the minimum size, and normalised chunking with two
// masks (a stricter one before the average size, a looser one after it), so that
// chunk sizes cluster around the average and a local edit moves at most a chunk or two
// of boundaries. Chunk boundaries are part of the stored format: every replica must cut
// the same file the same way, in every version of this program, or deduplication
// silently stops working. Nothing here may change without a new format version.
import { createHash } from 'node:crypto'
import { assert } from '../consensus/assert.ts'
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
    while (position < bytes.length) {
      if (length < CHUNK_SIZE_MIN_BYTES) {
        const skipped = Math.min(CHUNK_SIZE_MIN_BYTES - length, bytes.length - position)
        length += skipped
        position += skipped
        continue
      }
      const strict = length < CHUNK_SIZE_AVERAGE_BYTES
      const lengthLimit = strict ? CHUNK_SIZE_AVERAGE_BYTES : CHUNK_SIZE_MAX_BYTES
      const stop = Math.min(bytes.length, position + lengthLimit - length)
      const cut = this.findCut(bytes, position, stop, strict ? MASK_STRICT : MASK_LOOSE)
      const end = cut === NO_CUT ? stop : cut
      length += end - position
      position = end
      if (cut !== NO_CUT || length === CHUNK_SIZE_MAX_BYTES) {
        chunkEnds.push(this.streamOffset + position)
        length = 0
        this.fingerprint = 0
      }
    }
    assert(length < CHUNK_SIZE_MAX_BYTES, 'a chunk never outgrows the maximum size')
    this.streamOffset += bytes.length
    this.chunkLengthBytes = length
    return chunkEnds
  }

  /** Ends the stream: the offset where the last chunk ends, or null when no bytes are pending. */
  finish(): number | null {
    const pending = this.chunkLengthBytes
    this.chunkLengthBytes = 0
    this.fingerprint = 0
    return pending > 0 ? this.streamOffset : null
  }

  /**
   * Rolls the hash over bytes[from, stop) and returns the index just past the first byte
   * whose hash has the mask's bits clear, or NO_CUT. This loop is most of the chunker's
   * time: eight bytes per turn with one combined test measured 1.4 to 1.6 times as fast as
   * a test per byte, and gives the same cuts (the turn that holds a cut is rolled again
   * one byte at a time, from the hash it started with).
   */
  private findCut(bytes: Uint8Array, from: number, stop: number, mask: number): number {
    const gear = GEAR
    let fingerprint = this.fingerprint
    let index = from
    for (const unrolledStop = stop - 7; index < unrolledStop; index += 8) {
      const f1 = ((fingerprint << 1) + gear[bytes[index]!]!) | 0
      const f2 = ((f1 << 1) + gear[bytes[index + 1]!]!) | 0
      const f3 = ((f2 << 1) + gear[bytes[index + 2]!]!) | 0
      const f4 = ((f3 << 1) + gear[bytes[index + 3]!]!) | 0
      const f5 = ((f4 << 1) + gear[bytes[index + 4]!]!) | 0
      const f6 = ((f5 << 1) + gear[bytes[index + 5]!]!) | 0
      const f7 = ((f6 << 1) + gear[bytes[index + 6]!]!) | 0
      const f8 = ((f7 << 1) + gear[bytes[index + 7]!]!) | 0
      if (
        (f1 & mask) === 0 ||
        (f2 & mask) === 0 ||
        (f3 & mask) === 0 ||
        (f4 & mask) === 0 ||
        (f5 & mask) === 0 ||
        (f6 & mask) === 0 ||
        (f7 & mask) === 0 ||
        (f8 & mask) === 0
      )
        break
      fingerprint = f8
    }
    for (; index < stop; index++) {
      fingerprint = ((fingerprint << 1) + gear[bytes[index]!]!) | 0
      if ((fingerprint & mask) === 0) {
        this.fingerprint = fingerprint
        return index + 1
      }
    }
    this.fingerprint = fingerprint
    return NO_CUT
  }
}

/** What findCut returns when no byte in its range ends a chunk. */
const NO_CUT = -1

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

/**
 * A chunk whose hash this process computed from its bytes, so the chunk store may take it
 * without hashing it again. Only hashedChunk() makes one, and the one holder of the marker
 * (below): each is frozen and remembered in a set, and no cast can forge one (the store
 * asserts the mark). Chunks from anywhere else, a peer above all, are plain Chunks that
 * put() verifies.
 */
export type HashedChunk = Chunk & { readonly __hashedHere: true }
const hashedHere = new WeakSet<Chunk>()
let markerTaken = false

export function isHashedChunk(chunk: Chunk): chunk is HashedChunk {
  return hashedHere.has(chunk)
}

/**
 * Hands out the marker once, to the module that hashes this process's own read buffers in
 * this process's own worker thread (storage/hash-worker-client.ts, which takes it when it
 * loads): a hash computed there is computed in this process. Taking it twice is a
 * programmer error, so no other module can mark chunks it did not hash.
 */
export function takeHashedChunkMarker(): (hash: ChunkHash, bytes: Uint8Array) => HashedChunk {
  assert(!markerTaken, 'the hashed-chunk marker is taken once, by the hashing worker client')
  markerTaken = true
  return markHashed
}

function markHashed(hash: ChunkHash, bytes: Uint8Array): HashedChunk {
  const chunk = Object.freeze({ hash, bytes })
  hashedHere.add(chunk)
  return chunk as HashedChunk
}

export function hashedChunk(bytes: Uint8Array): HashedChunk {
  return markHashed(hashChunk(bytes), bytes)
}

/** Cuts bytes held in memory into chunks (views into `bytes`, not copies). */
export function chunkBytes(bytes: Uint8Array): HashedChunk[] {
  let start = 0
  return findChunkEnds(bytes).map((end) => {
    const chunk = bytes.subarray(start, end)
    start = end
    return hashedChunk(chunk)
  })
}
