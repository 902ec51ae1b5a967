// The binary form of a version record (compact-encoding): format version, kind tag, the
// master's time, then the kind's fields. Decoding treats the bytes as hostile: every
// length is bounded before anything is allocated, text must be valid UTF-8, trailing
// bytes are refused, and every failure is a ClusterError BAD_MESSAGE.
import c from 'compact-encoding'
import type { Encoder, State } from 'compact-encoding'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import type { ChunkHash } from './chunk-types.ts'
import {
  CHUNKS_PER_RECORD_MAX,
  PATCH_CHUNKS_MAX,
  PATCH_EDITS_MAX,
  RECORD_BYTES_MAX,
  RECORD_FORMAT_VERSION,
  checkRecord,
  type ChunkListEdit,
  type ChunkReference,
  type DatasetPath,
  type FileHash,
  type LogSeq,
  type PatchRecord,
  type PutRecord,
  type RecordKind,
  type VersionRecord,
} from './version-record.ts'

const KIND_TAGS: Record<RecordKind, number> = {
  put: 1,
  chunks: 2,
  delete: 3,
  rename: 4,
  symlink: 5,
  directory: 6,
  recoveryPoint: 7,
  patch: 8,
}
const KINDS_BY_TAG = new Map(
  Object.entries(KIND_TAGS).map(([kind, tag]) => [tag, kind as RecordKind]),
)

/** Text fields longer than this cannot be valid whatever the field (the longest is a symlink target). */
const TEXT_BYTES_MAX = 4096

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
const utf8Encoder = new TextEncoder()

export function encodeRecord(record: VersionRecord): Uint8Array {
  const problem = checkRecord(record)
  if (problem !== null)
    throw ClusterError.badArgument(`cannot encode ${record.kind} record: ${problem}`)
  const state = c.state()
  writeRecord(state, record, true)
  state.buffer = new Uint8Array(state.end)
  writeRecord(state, record, false)
  assert(state.start === state.end, 'record encoding wrote its preencoded length')
  // The bounds in version-record.ts are chosen so that a valid record always fits.
  assert(state.end <= RECORD_BYTES_MAX, 'a valid record fits in one block')
  return state.buffer
}

export function decodeRecord(bytes: Uint8Array): VersionRecord {
  if (bytes.byteLength > RECORD_BYTES_MAX)
    throw ClusterError.badMessage(
      `version record of ${bytes.byteLength} bytes is over ${RECORD_BYTES_MAX}`,
    )
  let record: VersionRecord
  const state = c.state(0, bytes.byteLength, bytes)
  try {
    record = readRecord(state)
  } catch (error) {
    if (isClusterError(error)) throw error
    throw ClusterError.badMessage(`malformed version record: ${(error as Error).message}`)
  }
  if (state.start !== state.end)
    throw ClusterError.badMessage(`version record has ${state.end - state.start} trailing bytes`)
  const problem = checkRecord(record)
  if (problem !== null) throw ClusterError.badMessage(`invalid ${record.kind} record: ${problem}`)
  return record
}

/** One pass sizes the record (`sizing`), the next writes it: compact-encoding's two phases. */
function writeRecord(state: State, record: VersionRecord, sizing: boolean): void {
  const put = <T>(encoder: Encoder<T>, value: T): void =>
    sizing ? encoder.preencode(state, value) : encoder.encode(state, value)
  const text = (value: string): void => put(c.buffer, utf8Encoder.encode(value))
  const chunkList = (chunks: readonly ChunkReference[]): void => {
    put(c.uint, chunks.length)
    for (const chunk of chunks) {
      put(c.fixed32, Buffer.from(chunk.hash, 'hex'))
      put(c.uint, chunk.lengthBytes)
    }
  }
  /** What a put and a patch both say of the file version. */
  const fileHeader = (version: PutRecord | PatchRecord): void => {
    text(version.path)
    put(c.uint, version.sizeBytes)
    put(c.uint, version.mode)
    put(c.int, version.mtimeMs)
    put(c.fixed32, Buffer.from(version.fileHash, 'hex'))
  }
  put(c.uint, RECORD_FORMAT_VERSION)
  put(c.uint8, KIND_TAGS[record.kind])
  put(c.uint, record.recordedAtMs)
  switch (record.kind) {
    case 'put':
      fileHeader(record)
      put(c.uint, record.continuationCount)
      chunkList(record.chunks)
      return
    case 'patch':
      fileHeader(record)
      put(c.uint, record.baseSeq)
      put(c.uint, record.edits.length)
      for (const edit of record.edits) {
        put(c.uint, edit.at)
        put(c.uint, edit.removeCount)
        chunkList(edit.insert)
      }
      return
    case 'chunks':
      text(record.path)
      put(c.uint, record.part)
      chunkList(record.chunks)
      return
    case 'delete':
      text(record.path)
      return
    case 'rename':
      text(record.from)
      text(record.to)
      return
    case 'symlink':
      text(record.path)
      text(record.target)
      return
    case 'directory':
      text(record.path)
      put(c.uint, record.mode)
      put(c.int, record.mtimeMs)
      return
    case 'recoveryPoint':
      text(record.label)
      put(c.uint, record.timeMs)
      return
  }
}

function readRecord(state: State): VersionRecord {
  const formatVersion = c.uint.decode(state)
  if (formatVersion !== RECORD_FORMAT_VERSION)
    throw ClusterError.badMessage(`unsupported version record format ${formatVersion}`)
  const tag = c.uint8.decode(state)
  const kind = KINDS_BY_TAG.get(tag)
  if (kind === undefined) throw ClusterError.badMessage(`unknown version record kind ${tag}`)
  const recordedAtMs = readCount(state)
  switch (kind) {
    case 'put':
      return {
        kind,
        recordedAtMs,
        ...readFileHeader(state),
        continuationCount: readCount(state),
        chunks: readChunkList(state),
      }
    case 'patch':
      return {
        kind,
        recordedAtMs,
        ...readFileHeader(state),
        baseSeq: readCount(state) as LogSeq,
        edits: readEdits(state),
      }
    case 'chunks':
      return {
        kind,
        recordedAtMs,
        path: readText(state) as DatasetPath,
        part: readCount(state),
        chunks: readChunkList(state),
      }
    case 'delete':
      return { kind, recordedAtMs, path: readText(state) as DatasetPath }
    case 'rename':
      return {
        kind,
        recordedAtMs,
        from: readText(state) as DatasetPath,
        to: readText(state) as DatasetPath,
      }
    case 'symlink':
      return { kind, recordedAtMs, path: readText(state) as DatasetPath, target: readText(state) }
    case 'directory':
      return {
        kind,
        recordedAtMs,
        path: readText(state) as DatasetPath,
        mode: readCount(state),
        mtimeMs: c.int.decode(state),
      }
    case 'recoveryPoint':
      return { kind, recordedAtMs, label: readText(state), timeMs: readCount(state) }
  }
}

/** What a put and a patch both say of the file version, in the order they say it. */
function readFileHeader(
  state: State,
): Pick<PutRecord, 'path' | 'sizeBytes' | 'mode' | 'mtimeMs' | 'fileHash'> {
  // Object literal fields are evaluated in order, which is the encoding's order.
  return {
    path: readText(state) as DatasetPath,
    sizeBytes: readCount(state),
    mode: readCount(state),
    mtimeMs: c.int.decode(state),
    fileHash: readHex32(state) as FileHash,
  }
}

function readCount(state: State): number {
  const value = c.uint.decode(state)
  if (!Number.isSafeInteger(value))
    throw ClusterError.badMessage('number out of range in version record')
  return value
}

function readText(state: State): string {
  const bytes = c.buffer.decode(state)
  if (bytes.byteLength > TEXT_BYTES_MAX)
    throw ClusterError.badMessage('text field too long in version record')
  try {
    return strictUtf8.decode(bytes)
  } catch {
    throw ClusterError.badMessage('text field is not UTF-8 in version record')
  }
}

function readHex32(state: State): string {
  return Buffer.from(c.fixed32.decode(state)).toString('hex')
}

function readEdits(state: State): ChunkListEdit[] {
  const count = readCount(state)
  if (count > PATCH_EDITS_MAX) throw ClusterError.badMessage('too many edits in one patch record')
  const edits: ChunkListEdit[] = []
  let inserted = 0
  for (let index = 0; index < count; index++) {
    const at = readCount(state)
    const removeCount = readCount(state)
    const insert = readChunkList(state, PATCH_CHUNKS_MAX - inserted)
    inserted += insert.length
    edits.push({ at, removeCount, insert })
  }
  return edits
}

function readChunkList(state: State, countMax = CHUNKS_PER_RECORD_MAX): ChunkReference[] {
  const count = readCount(state)
  if (count > countMax) throw ClusterError.badMessage('too many chunks in one version record')
  const chunks: ChunkReference[] = []
  for (let index = 0; index < count; index++)
    chunks.push({ hash: readHex32(state) as ChunkHash, lengthBytes: readCount(state) })
  return chunks
}
