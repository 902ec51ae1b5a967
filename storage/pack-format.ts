// The layout of pack files. A pack is a plain sequence of records, each framed so that
// the pack can be scanned and verified on its own, without the index:
//
//   magic    4 bytes  "CRK1" (chunk record, format 1)
//   length   4 bytes  payload length, big-endian, at most CHUNK_SIZE_MAX_BYTES
//   hash    32 bytes  SHA-256 of the payload
//   payload  `length` bytes
//
// Packs are named by a number that is never reused while the store lives: 000001.pack.
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { ClusterError } from '../consensus/cluster-error.ts'
import { CHUNK_HASH_BYTES, CHUNK_SIZE_MAX_BYTES, type ChunkHash } from './chunk-types.ts'

export const RECORD_MAGIC = 0x43524b31
export const RECORD_HEADER_BYTES = 8 + CHUNK_HASH_BYTES
export const RECORD_BYTES_MAX = RECORD_HEADER_BYTES + CHUNK_SIZE_MAX_BYTES

/** Where a chunk's record is: `offset` is the record's start, `lengthBytes` its payload's length. */
export interface RecordLocation {
  readonly packId: number
  readonly offset: number
  readonly lengthBytes: number
}

export function recordBytes(location: RecordLocation): number {
  return RECORD_HEADER_BYTES + location.lengthBytes
}

export function recordEnd(location: RecordLocation): number {
  return location.offset + recordBytes(location)
}

const PACK_FILE_NAME = /^(\d{6,})\.pack$/

export function packFileName(packId: number): string {
  return `${String(packId).padStart(6, '0')}.pack`
}

export function packPath(packsDirectory: string, packId: number): string {
  return join(packsDirectory, packFileName(packId))
}

/** The pack number a file name stands for, or null for any other file. */
export function parsePackFileName(name: string): number | null {
  const match = PACK_FILE_NAME.exec(name)
  return match ? Number(match[1]) : null
}

export function writeRecordHeader(
  target: Buffer,
  offset: number,
  hash: Uint8Array,
  lengthBytes: number,
): void {
  target.writeUInt32BE(RECORD_MAGIC, offset)
  target.writeUInt32BE(lengthBytes, offset + 4)
  target.set(hash, offset + 8)
}

export interface RecordHeader {
  readonly lengthBytes: number
  readonly hash: Buffer
}

/** The header at `offset` of `bytes`, or null when the bytes there are not a record's start. */
export function readRecordHeader(bytes: Buffer, offset: number): RecordHeader | null {
  if (offset + RECORD_HEADER_BYTES > bytes.length) return null
  if (bytes.readUInt32BE(offset) !== RECORD_MAGIC) return null
  const lengthBytes = bytes.readUInt32BE(offset + 4)
  if (lengthBytes > CHUNK_SIZE_MAX_BYTES) return null
  return { lengthBytes, hash: bytes.subarray(offset + 8, offset + RECORD_HEADER_BYTES) }
}

export function sha256(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(bytes).digest()
}

/**
 * Checks a record read back for `hash` at `location` and returns its payload. A record
 * that is not the one the index named is CORRUPT_STORE; a payload whose bytes no longer
 * hash to its name is HASH_MISMATCH. Both messages name the chunk and where it lies.
 */
export function verifyRecord(record: Buffer, hash: ChunkHash, location: RecordLocation): Buffer {
  const where = `pack ${packFileName(location.packId)} at offset ${location.offset}`
  if (record.length < recordBytes(location)) {
    throw ClusterError.corruptStore(
      `chunk ${hash}: its index entry points past the end of ${where} (${location.lengthBytes} bytes)`,
    )
  }
  const header = readRecordHeader(record, 0)
  if (
    header === null ||
    header.lengthBytes !== location.lengthBytes ||
    header.hash.toString('hex') !== hash
  ) {
    throw ClusterError.corruptStore(`chunk ${hash}: ${where} does not hold its record`)
  }
  const payload = record.subarray(RECORD_HEADER_BYTES, recordBytes(location))
  const actual = sha256(payload).toString('hex')
  if (actual !== hash) {
    throw ClusterError.hashMismatch(
      `chunk ${hash} is damaged in ${where}: its bytes hash to ${actual}`,
    )
  }
  return payload
}
