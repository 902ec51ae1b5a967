// The records of a dataset's version log: what a master appends to its signed log core
// and what every replica indexes, materialises and restores from. The binary form is in
// version-record-codec.ts; this file holds the types, the bounds and the checks that
// both encoding and decoding apply, because a record from a peer is untrusted input.
import { CHUNK_SIZE_MAX_BYTES, type ChunkHash } from './chunk-types.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import type { FileHash } from './chunker.ts'

/** Bumped when the encoding changes; a decoder refuses formats it does not know. */
export const RECORD_FORMAT_VERSION = 1

/** Hypercore caps a block at 15 MiB; records stay far below so replication streams stay smooth. */
export const RECORD_BYTES_MAX = 1024 * 1024
/** Dataset-relative paths, in UTF-8 bytes. Longer paths are skipped by the scanner with a warning. */
export const PATH_BYTES_MAX = 1024
/** One path segment (Linux NAME_MAX). */
export const PATH_SEGMENT_BYTES_MAX = 255
export const SYMLINK_TARGET_BYTES_MAX = 4096
export const LABEL_BYTES_MAX = 256
/** A put's chunk list may spill into this many continuation records before it. */
export const CONTINUATION_RECORDS_MAX = 4096
/** An upper bound on everything in a put record except its chunk list. */
const RECORD_HEADER_BYTES_MAX = 4096
/** A chunk reference: 32 hash bytes and a length of at most 5 varint bytes. */
const CHUNK_REFERENCE_BYTES_MAX = 32 + 5
export const CHUNKS_PER_RECORD_MAX = Math.floor(
  (RECORD_BYTES_MAX - RECORD_HEADER_BYTES_MAX) / CHUNK_REFERENCE_BYTES_MAX,
)
/** Edits in one patch record. */
export const PATCH_EDITS_MAX = 4096
/** An upper bound on an edit's bytes besides its chunks: three varints. */
const EDIT_HEADER_BYTES_MAX = 3 * 5
/** Chunks all the edits of one patch insert, so that the largest patch still fits a block. */
export const PATCH_CHUNKS_MAX = Math.floor(
  (RECORD_BYTES_MAX - RECORD_HEADER_BYTES_MAX - PATCH_EDITS_MAX * EDIT_HEADER_BYTES_MAX) /
    CHUNK_REFERENCE_BYTES_MAX,
)
/** Permission bits, set-id bits and the sticky bit; the file type is implied by the record kind. */
export const MODE_BITS_MAX = 0o7777

/** A dataset-relative, '/'-separated, normalised path (see checkDatasetPath). */
export type DatasetPath = string & { readonly __brand: 'DatasetPath' }
/** SHA-256 of a whole file's bytes, 64 lowercase hex characters (the chunker computes it). */
export type { FileHash } from './chunker.ts'
/** A block's position in a dataset's version log, from 0. */
export type LogSeq = number & { readonly __brand: 'LogSeq' }

export const logSeq = (value: number): LogSeq => value as LogSeq

export interface ChunkReference {
  readonly hash: ChunkHash
  readonly lengthBytes: number
}

/** The master's clock when it recorded the change (kept non-decreasing by the log). */
interface RecordCommon {
  readonly recordedAtMs: number
}

/**
 * A new version of a regular file. Its chunk list may be too long for one block: then its
 * first parts go into `continuationCount` 'chunks' records appended just before it, in order,
 * and this record, last, carries the final part. The version exists once this record does.
 */
export interface PutRecord extends RecordCommon {
  readonly kind: 'put'
  readonly path: DatasetPath
  readonly sizeBytes: number
  readonly mode: number
  readonly mtimeMs: number
  readonly fileHash: FileHash
  readonly continuationCount: number
  readonly chunks: readonly ChunkReference[]
}

/**
 * One change to a chunk list: `removeCount` chunks from index `at` of the base list are
 * replaced by `insert` (either may be empty, not both).
 */
export interface ChunkListEdit {
  readonly at: number
  readonly removeCount: number
  readonly insert: readonly ChunkReference[]
}

/**
 * A new version of a regular file, given as edits to the chunk list of an earlier put record
 * (its base, which may belong to another path: a file renamed, then changed). A small change
 * to a big file is recorded in a record of a few hundred bytes instead of one that lists every
 * chunk again (a 256 MiB file has about 4,000). The base is always a put, never another
 * patch: the edits are cumulative from the base, so a version is one base and one patch
 * away, and the master writes a whole put again once a patch would no longer be small.
 */
export interface PatchRecord extends RecordCommon {
  readonly kind: 'patch'
  readonly path: DatasetPath
  readonly sizeBytes: number
  readonly mode: number
  readonly mtimeMs: number
  readonly fileHash: FileHash
  /** The put record whose chunk list the edits apply to; earlier in the log. */
  readonly baseSeq: LogSeq
  /** In ascending order of `at`, each after the end of the one before. */
  readonly edits: readonly ChunkListEdit[]
}

/** Part `part` (1-based) of the chunk list of the put record that follows its parts. */
export interface ChunksRecord extends RecordCommon {
  readonly kind: 'chunks'
  readonly path: DatasetPath
  readonly part: number
  readonly chunks: readonly ChunkReference[]
}

export interface DeleteRecord extends RecordCommon {
  readonly kind: 'delete'
  readonly path: DatasetPath
}

/** A regular file moved, content, mode and mtime unchanged: `to` gets `from`'s last version. */
export interface RenameRecord extends RecordCommon {
  readonly kind: 'rename'
  readonly from: DatasetPath
  readonly to: DatasetPath
}

/** A symbolic link, stored as text and never followed. */
export interface SymlinkRecord extends RecordCommon {
  readonly kind: 'symlink'
  readonly path: DatasetPath
  readonly target: string
}

/** Every directory is recorded, so empty ones replicate and modes and mtimes come back. */
export interface DirectoryRecord extends RecordCommon {
  readonly kind: 'directory'
  readonly path: DatasetPath
  readonly mode: number
  readonly mtimeMs: number
}

export interface RecoveryPointRecord extends RecordCommon {
  readonly kind: 'recoveryPoint'
  readonly label: string
  readonly timeMs: number
}

export type VersionRecord =
  | PutRecord
  | PatchRecord
  | ChunksRecord
  | DeleteRecord
  | RenameRecord
  | SymlinkRecord
  | DirectoryRecord
  | RecoveryPointRecord

export type RecordKind = VersionRecord['kind']

type WithoutTime<R> = R extends VersionRecord ? Omit<R, 'recordedAtMs'> : never
/** A record before the log stamps it with the master's time. */
export type RecordDraft = WithoutTime<VersionRecord>

/** Names a dataset in the topology, in the index and in the Corestore. */
export type DatasetId = string & { readonly __brand: 'DatasetId' }
const DATASET_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/

export function datasetId(text: string): DatasetId {
  if (!DATASET_ID_PATTERN.test(text))
    throw ClusterError.badArgument(
      `bad dataset id ${JSON.stringify(text)}: use 1-128 of A-Z a-z 0-9 . _ -`,
    )
  return text as DatasetId
}

/** A whole file version before it is split into records. */
export interface FileVersion {
  readonly path: DatasetPath
  readonly sizeBytes: number
  readonly mode: number
  readonly mtimeMs: number
  readonly fileHash: FileHash
  readonly chunks: readonly ChunkReference[]
}

const utf8Encoder = new TextEncoder()
// With the u flag a surrogate only matches when unpaired: text that has no UTF-8 form.
const LONE_SURROGATE = /\p{Surrogate}/u

/** Why `text` is not a valid dataset path, or null when it is one. */
export function checkDatasetPath(text: string): string | null {
  if (text.length === 0) return 'empty path'
  if (text.includes('\0')) return 'path contains NUL'
  if (utf8Encoder.encode(text).length > PATH_BYTES_MAX)
    return `path longer than ${PATH_BYTES_MAX} bytes`
  if (text.startsWith('/')) return 'absolute path'
  for (const segment of text.split('/')) {
    if (segment === '') return 'empty path segment'
    if (segment === '.' || segment === '..') return `path segment '${segment}'`
    if (utf8Encoder.encode(segment).length > PATH_SEGMENT_BYTES_MAX)
      return `path segment longer than ${PATH_SEGMENT_BYTES_MAX} bytes`
  }
  if (LONE_SURROGATE.test(text)) return 'path is not valid Unicode'
  return null
}

/** A validated path; BAD_ARGUMENT otherwise (for paths from users and local code). */
export function datasetPath(text: string): DatasetPath {
  const problem = checkDatasetPath(text)
  if (problem !== null)
    throw ClusterError.badArgument(`bad dataset path ${JSON.stringify(text)}: ${problem}`)
  return text as DatasetPath
}

/** The parent directory of a path, or null for a top-level entry. */
export function parentPath(path: DatasetPath): DatasetPath | null {
  const slash = path.lastIndexOf('/')
  return slash < 0 ? null : (path.slice(0, slash) as DatasetPath)
}

/** True when `path` is `ancestor` or lies below it; the empty ancestor is the dataset root. */
export function isWithin(path: string, ancestor: string): boolean {
  return ancestor === '' || path === ancestor || path.startsWith(`${ancestor}/`)
}

/** Why a record's fields are invalid, or null. Shared by the encoder and the decoder. */
export function checkRecord(record: VersionRecord): string | null {
  if (!isCount(record.recordedAtMs)) return 'bad recordedAtMs'
  switch (record.kind) {
    case 'put':
      return (
        checkPathField(record.path) ??
        checkMode(record.mode) ??
        checkTimeMs(record.mtimeMs) ??
        checkHex64(record.fileHash, 'file hash') ??
        checkChunkList(record.chunks) ??
        (isCount(record.sizeBytes) ? null : 'bad size') ??
        (isCount(record.continuationCount) && record.continuationCount <= CONTINUATION_RECORDS_MAX
          ? null
          : 'bad continuation count') ??
        // Without continuations the whole chunk list is here, so its sum is checkable now.
        (record.continuationCount > 0 || sumLengths(record.chunks) === record.sizeBytes
          ? null
          : 'chunk lengths do not add up to the file size')
      )
    case 'patch':
      return (
        checkPathField(record.path) ??
        checkMode(record.mode) ??
        checkTimeMs(record.mtimeMs) ??
        checkHex64(record.fileHash, 'file hash') ??
        (isCount(record.sizeBytes) ? null : 'bad size') ??
        (isCount(record.baseSeq) ? null : 'bad base') ??
        checkEdits(record.edits)
      )
    case 'chunks':
      if (!isCount(record.part) || record.part < 1 || record.part > CONTINUATION_RECORDS_MAX)
        return 'bad continuation part'
      if (record.chunks.length === 0) return 'empty continuation record'
      return checkPathField(record.path) ?? checkChunkList(record.chunks)
    case 'delete':
      return checkPathField(record.path)
    case 'rename':
      if (record.from === record.to) return 'rename to the same path'
      return checkPathField(record.from) ?? checkPathField(record.to)
    case 'symlink':
      return checkPathField(record.path) ?? checkSymlinkTarget(record.target)
    case 'directory':
      return checkPathField(record.path) ?? checkMode(record.mode) ?? checkTimeMs(record.mtimeMs)
    case 'recoveryPoint':
      return checkLabel(record.label) ?? (isCount(record.timeMs) ? null : 'bad recovery point time')
  }
}

export function checkLabel(label: string): string | null {
  if (label.length === 0) return 'empty label'
  if (utf8Encoder.encode(label).length > LABEL_BYTES_MAX)
    return `label longer than ${LABEL_BYTES_MAX} bytes`
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(label)) return 'label contains a control character'
  return null
}

export function checkSymlinkTarget(target: string): string | null {
  if (target.length === 0) return 'empty symlink target'
  if (target.includes('\0')) return 'symlink target contains NUL'
  if (utf8Encoder.encode(target).length > SYMLINK_TARGET_BYTES_MAX)
    return `symlink target longer than ${SYMLINK_TARGET_BYTES_MAX} bytes`
  return null
}

/**
 * The records for one file version: continuation records carrying the first parts of a long
 * chunk list, then the put record with the last part. Appended as one batch.
 */
export function fileVersionRecords(
  version: FileVersion,
  chunksPerRecordMax = CHUNKS_PER_RECORD_MAX,
): RecordDraft[] {
  if (!(chunksPerRecordMax >= 1 && chunksPerRecordMax <= CHUNKS_PER_RECORD_MAX))
    throw ClusterError.badArgument(`chunks per record must be 1..${CHUNKS_PER_RECORD_MAX}`)
  const parts: (readonly ChunkReference[])[] = []
  for (let start = 0; start < version.chunks.length; start += chunksPerRecordMax)
    parts.push(version.chunks.slice(start, start + chunksPerRecordMax))
  const last = parts.pop() ?? []
  if (parts.length > CONTINUATION_RECORDS_MAX)
    throw ClusterError.badArgument(`file ${version.path} has too many chunks for one version`)
  const records: RecordDraft[] = parts.map((chunks, index) => ({
    kind: 'chunks',
    path: version.path,
    part: index + 1,
    chunks,
  }))
  records.push({ kind: 'put', ...version, continuationCount: parts.length, chunks: last })
  return records
}

/** Checks a put's continuation records (in order) and returns its whole chunk list. */
export function assembleChunkList(
  put: PutRecord,
  continuations: readonly VersionRecord[],
): ChunkReference[] {
  if (continuations.length !== put.continuationCount)
    throw ClusterError.badMessage(`put of ${put.path} misses continuation records`)
  const chunks: ChunkReference[] = []
  continuations.forEach((record, index) => {
    if (record.kind !== 'chunks' || record.path !== put.path || record.part !== index + 1)
      throw ClusterError.badMessage(`put of ${put.path} has a bad continuation record ${index + 1}`)
    chunks.push(...record.chunks)
  })
  chunks.push(...put.chunks)
  if (sumLengths(chunks) !== put.sizeBytes)
    throw ClusterError.badMessage(`chunk lengths of ${put.path} do not add up to its size`)
  return chunks
}

/**
 * The chunk list a patch describes: its base's list with the edits applied. BAD_MESSAGE when
 * the edits do not fit the base or the lengths do not add up to the patch's size.
 */
export function applyChunkListEdits(
  patch: PatchRecord,
  base: readonly ChunkReference[],
): ChunkReference[] {
  const chunks: ChunkReference[] = []
  let next = 0 // the first base chunk not yet copied or removed
  for (const edit of patch.edits) {
    if (edit.at + edit.removeCount > base.length)
      throw ClusterError.badMessage(`patch of ${patch.path} edits past the end of its base`)
    for (; next < edit.at; next++) chunks.push(base[next]!)
    chunks.push(...edit.insert)
    next = edit.at + edit.removeCount
  }
  for (; next < base.length; next++) chunks.push(base[next]!)
  if (sumLengths(chunks) !== patch.sizeBytes)
    throw ClusterError.badMessage(`chunk lengths of ${patch.path} do not add up to its size`)
  return chunks
}

export function sumLengths(chunks: readonly ChunkReference[]): number {
  let total = 0
  for (const chunk of chunks) total += chunk.lengthBytes
  return total
}

function checkPathField(path: string): string | null {
  const problem = checkDatasetPath(path)
  return problem === null ? null : `${problem} (${JSON.stringify(path.slice(0, 80))})`
}

function checkChunkList(chunks: readonly ChunkReference[]): string | null {
  if (chunks.length > CHUNKS_PER_RECORD_MAX) return 'too many chunks in one record'
  for (const chunk of chunks) {
    const problem = checkHex64(chunk.hash, 'chunk hash')
    if (problem !== null) return problem
    if (
      !isCount(chunk.lengthBytes) ||
      chunk.lengthBytes < 1 ||
      chunk.lengthBytes > CHUNK_SIZE_MAX_BYTES
    )
      return 'bad chunk length'
  }
  return null
}

/** Edits in order, none empty, none overlapping, with no more chunks than one record holds. */
function checkEdits(edits: readonly ChunkListEdit[]): string | null {
  if (edits.length === 0) return 'patch without edits'
  if (edits.length > PATCH_EDITS_MAX) return 'too many edits in one patch'
  let inserted = 0
  let end = 0 // where the edit before ended in the base list
  for (const edit of edits) {
    if (!isCount(edit.at) || !isCount(edit.removeCount)) return 'bad edit position'
    if (edit.at < end) return 'edits out of order or overlapping'
    if (edit.removeCount === 0 && edit.insert.length === 0) return 'empty edit'
    inserted += edit.insert.length
    if (inserted > PATCH_CHUNKS_MAX) return 'too many chunks in one patch'
    const problem = checkChunkList(edit.insert)
    if (problem !== null) return problem
    end = edit.at + edit.removeCount
  }
  return null
}

function checkHex64(value: string, what: string): string | null {
  return /^[0-9a-f]{64}$/.test(value) ? null : `bad ${what}`
}

function checkMode(mode: number): string | null {
  return isCount(mode) && mode <= MODE_BITS_MAX ? null : 'bad mode'
}

function checkTimeMs(timeMs: number): string | null {
  return Number.isSafeInteger(timeMs) ? null : 'bad mtime'
}

function isCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0
}
