// The version index of one dataset, in the node's classic-level database: every version of
// every path, the log length at any time, and the recovery points. It is derived from the
// version log and never trusted over it: it records the log's key, how far it has indexed,
// the log's fingerprint at that length and a digest of its own entries, and on open it
// rebuilds itself from the log when any of them disagrees. Pruned marks are not derived
// (the log does not know what retention dropped), so they live apart and survive rebuilds.
import { createHash } from 'node:crypto'
import type { AbstractLevel } from 'abstract-level'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import type { VersionLogReader } from './version-log.ts'
import { versionChunkList, type ReadRecord } from './version-content.ts'
import {
  logSeq,
  type DatasetId,
  type DatasetPath,
  type FileHash,
  type LogSeq,
  type PatchRecord,
  type PutRecord,
  type VersionRecord,
} from './version-record.ts'

/** A classic-level database (or memory-level in the simulator) with string keys and values. */
export type LevelDatabase = AbstractLevel<string | Buffer | Uint8Array, string, string>

export const INDEX_FORMAT_VERSION = 1
/** Records indexed per atomic database batch. */
export const INDEX_BATCH_RECORDS_MAX = 1000
/** Versions of one path returned by one query. */
export const VERSIONS_LIST_MAX = 100_000

interface EntryCommon {
  /** The record that made this version: a put, patch, rename, delete, symlink or directory record. */
  readonly seq: LogSeq
  readonly path: DatasetPath
  readonly recordedAtMs: number
}

export interface FileEntry extends EntryCommon {
  readonly kind: 'file'
  readonly sizeBytes: number
  readonly mode: number
  readonly mtimeMs: number
  readonly fileHash: FileHash
  /** The put or patch record of the content: `seq` itself, or the renamed file's. */
  readonly contentSeq: LogSeq
  readonly renamedFrom: DatasetPath | null
}

export interface DirectoryEntry extends EntryCommon {
  readonly kind: 'directory'
  readonly mode: number
  readonly mtimeMs: number
}

export interface SymlinkEntry extends EntryCommon {
  readonly kind: 'symlink'
  readonly target: string
}

export interface DeletedEntry extends EntryCommon {
  readonly kind: 'deleted'
  readonly renamedTo: DatasetPath | null
}

export type VersionEntry = FileEntry | DirectoryEntry | SymlinkEntry | DeletedEntry
export type LiveEntry = Exclude<VersionEntry, DeletedEntry>

export interface RecoveryPoint {
  readonly label: string
  readonly timeMs: number
  readonly seq: LogSeq
  /** The log length that includes the point and everything before it. */
  readonly length: number
}

interface IndexMeta {
  readonly formatVersion: number
  readonly logKey: string
  readonly indexedLength: number
  readonly fingerprint: string
  readonly entryCount: number
  readonly entryDigest: string
  readonly invalidRecords: number
  /** The largest record time seen: record times are made non-decreasing with it. */
  readonly timeMsMax: number
}

// Keys inside the dataset's derived sublevel. Paths never contain NUL, so `path NUL seq`
// sorts every version of a path together, in seq order, before any path below it.
const META_KEY = 'meta'
const VERSION_PREFIX = 'v:'
const TIME_PREFIX = 't:'
const POINT_PREFIX = 'p:'
// Each prefix ends in ':' and ';' follows it: the end of a prefix's key range, in bytes.
const VERSION_END = 'v;'
const POINT_END = 'p;'
const SEPARATOR = '\0'
const AFTER_SEPARATOR = '\x01'
const NUMBER_DIGITS = 16

const DIGEST_BYTES = 32
const ZERO_DIGEST = Buffer.alloc(DIGEST_BYTES).toString('hex')

export class VersionIndex {
  private readonly derived: LevelDatabase
  private readonly pruned: LevelDatabase
  private readonly log: VersionLogReader
  /** How far the log may be indexed: all of it, or on a replica what it holds complete. */
  private readonly indexableLength: () => number
  private meta: IndexMeta
  private queue: Promise<unknown> = Promise.resolve()
  /** Why the last open or reindex rebuilt the index (null: it was consistent). */
  rebuildReason: string | null = null

  private constructor(
    database: LevelDatabase,
    datasetId: DatasetId,
    log: VersionLogReader,
    indexableLength: () => number,
  ) {
    this.indexableLength = indexableLength
    this.derived = database.sublevel(['dataset', datasetId, 'index']) as unknown as LevelDatabase
    this.pruned = database.sublevel(['dataset', datasetId, 'pruned']) as unknown as LevelDatabase
    this.log = log
    this.meta = emptyMeta(log.keyHex)
  }

  /**
   * Opens the dataset's index, rebuilds it if it disagrees with the log, and catches up.
   * `indexableLength` bounds what is indexed (a replica indexes only the records whose
   * chunks it holds, so that it never lists a version it cannot restore); by default, all.
   */
  static async open(options: {
    database: LevelDatabase
    datasetId: DatasetId
    log: VersionLogReader
    indexableLength?: () => number
  }): Promise<VersionIndex> {
    const index = new VersionIndex(
      options.database,
      options.datasetId,
      options.log,
      options.indexableLength ?? (() => Number.POSITIVE_INFINITY),
    )
    await index.exclusive(async () => {
      const problem = await index.checkConsistency()
      if (problem !== null) await index.clear(problem)
    })
    await index.catchUp()
    return index
  }

  get indexedLength(): number {
    return this.meta.indexedLength
  }

  /** Records that could not be indexed (malformed, or inconsistent with the log before them). */
  get invalidRecords(): number {
    return this.meta.invalidRecords
  }

  /** Indexes every record the log holds now (as far as it may); returns the indexed length. */
  catchUp(): Promise<number> {
    return this.exclusive(async () => {
      const target = Math.min(this.log.length, this.indexableLength())
      while (this.meta.indexedLength < target) {
        const end = Math.min(target, this.meta.indexedLength + INDEX_BATCH_RECORDS_MAX)
        await this.indexBatch(end)
      }
      return this.meta.indexedLength
    })
  }

  /** Drops everything derived and indexes the whole log again. */
  async reindex(): Promise<void> {
    await this.exclusive(() => this.clear('reindex requested'))
    await this.catchUp()
  }

  /** Every version of `path`, oldest first. */
  async versionsOf(path: DatasetPath, limit = VERSIONS_LIST_MAX): Promise<VersionEntry[]> {
    const entries: VersionEntry[] = []
    for await (const [, value] of readRange(this.derived, {
      gt: versionKeyPrefix(path),
      lt: `${VERSION_PREFIX}${path}${AFTER_SEPARATOR}`,
      limit: Math.min(limit, VERSIONS_LIST_MAX),
    }))
      entries.push(parseEntry(value))
    return entries
  }

  /** Every version of every path, in key order (path, then seq). */
  async *allVersions(): AsyncGenerator<VersionEntry> {
    for await (const [, value] of readRange(this.derived, { gte: VERSION_PREFIX, lt: VERSION_END }))
      yield parseEntry(value)
  }

  /** The version of `path` current at log length `atLength`, or null if it never existed by then. */
  async latest(
    path: DatasetPath,
    atLength: number = this.indexedLength,
  ): Promise<VersionEntry | null> {
    this.checkLength(atLength)
    for await (const value of this.derived.values({
      gt: versionKeyPrefix(path),
      lt: versionKey(path, logSeq(atLength)),
      reverse: true,
      limit: 1,
    }))
      return parseEntry(value)
    return null
  }

  /**
   * The live entries (files, directories, symlinks) at log length `atLength`, in key order,
   * limited to `under` and everything below it ('' for the whole dataset).
   */
  async *entries(atLength: number, under = ''): AsyncGenerator<LiveEntry> {
    this.checkLength(atLength)
    const ranges =
      under === ''
        ? [[VERSION_PREFIX, VERSION_END]]
        : [
            [versionKeyPrefix(under), `${VERSION_PREFIX}${under}${AFTER_SEPARATOR}`],
            [`${VERSION_PREFIX}${under}/`, `${VERSION_PREFIX}${under}0`], // '0' follows '/'
          ]
    for (const [gt, lt] of ranges) {
      let current: VersionEntry | null = null
      for await (const [, value] of readRange(this.derived, { gt: gt!, lt: lt! })) {
        const entry = parseEntry(value)
        if (current !== null && entry.path !== current.path) {
          if (current.kind !== 'deleted') yield current
          current = null
        }
        if (entry.seq < atLength) current = entry
      }
      if (current !== null && current.kind !== 'deleted') yield current
    }
  }

  /** The log length at time `timeMs`: every record recorded at or before it. */
  async lengthAtTime(timeMs: number): Promise<number> {
    for await (const key of this.derived.keys({
      gte: TIME_PREFIX,
      lt: `${TIME_PREFIX}${padNumber(Math.max(0, Math.floor(timeMs)))}${AFTER_SEPARATOR}`,
      reverse: true,
      limit: 1,
    }))
      return Number(key.slice(key.lastIndexOf(SEPARATOR) + 1)) + 1
    return 0
  }

  /** The latest recovery point with this label. */
  async recoveryPoint(label: string): Promise<RecoveryPoint | null> {
    for await (const value of this.derived.values({
      gt: `${POINT_PREFIX}${label}${SEPARATOR}`,
      lt: `${POINT_PREFIX}${label}${AFTER_SEPARATOR}`,
      reverse: true,
      limit: 1,
    }))
      return parsePoint(value)
    return null
  }

  async recoveryPoints(): Promise<RecoveryPoint[]> {
    const points: RecoveryPoint[] = []
    for await (const [, value] of readRange(this.derived, { gte: POINT_PREFIX, lt: POINT_END }))
      points.push(parsePoint(value))
    return points.sort((a, b) => a.seq - b.seq)
  }

  /** Durably marks a version as pruned by retention: its chunks may be gone. */
  markPruned(entry: VersionEntry): Promise<void> {
    return this.markPrunedAll([entry])
  }

  /** Durably marks versions as pruned, in one batch. */
  async markPrunedAll(versions: readonly { seq: LogSeq; path: DatasetPath }[]): Promise<void> {
    const operations = versions.map(({ seq, path }) => ({
      type: 'put' as const,
      key: padNumber(seq),
      value: path,
    }))
    // Synced (a classic-level option the abstract type lacks): the chunks go right after.
    await this.pruned.batch(operations, { sync: true } as object)
  }

  async isPruned(seq: LogSeq): Promise<boolean> {
    return (await this.pruned.get(padNumber(seq))) !== undefined
  }

  /** Every pruned seq. */
  async prunedSeqs(): Promise<Set<LogSeq>> {
    const seqs = new Set<LogSeq>()
    for await (const [key] of readRange(this.pruned)) seqs.add(logSeq(Number(key)))
    return seqs
  }

  /** Why the stored index cannot be trusted, or null when it agrees with the log and itself. */
  private async checkConsistency(): Promise<string | null> {
    const stored = await this.derived.get(META_KEY)
    if (stored === undefined)
      return (await isEmpty(this.derived)) ? null : 'index entries without a marker'
    let meta: IndexMeta
    try {
      meta = JSON.parse(stored) as IndexMeta
    } catch {
      return 'index marker is damaged'
    }
    if (meta.formatVersion !== INDEX_FORMAT_VERSION) return `index format ${meta.formatVersion}`
    if (meta.logKey !== this.log.keyHex) return 'index belongs to another log'
    if (!(Number.isSafeInteger(meta.indexedLength) && meta.indexedLength >= 0))
      return 'index marker is damaged'
    if (meta.indexedLength > this.log.length)
      return `index reaches ${meta.indexedLength} but the log holds ${this.log.length}`
    if (meta.indexedLength > this.indexableLength())
      return `index reaches ${meta.indexedLength} but only ${this.indexableLength()} records are complete here`
    if ((await this.log.fingerprint(meta.indexedLength)) !== meta.fingerprint)
      return 'the log differs from what was indexed'
    const { count, digest } = await this.digestEntries()
    if (count !== meta.entryCount || digest !== meta.entryDigest) return 'index entries are damaged'
    this.meta = meta
    return null
  }

  private async digestEntries(): Promise<{ count: number; digest: string }> {
    const digest = Buffer.alloc(DIGEST_BYTES)
    let count = 0
    for await (const [key, value] of readRange(this.derived)) {
      if (key === META_KEY) continue
      xorInto(digest, entryHash(key, value))
      count++
    }
    return { count, digest: digest.toString('hex') }
  }

  private async clear(reason: string): Promise<void> {
    this.rebuildReason = reason
    // The marker goes first: a crash during the rebuild leaves no marker, so it restarts.
    await this.derived.del(META_KEY)
    await this.derived.clear()
    this.meta = emptyMeta(this.log.keyHex)
  }

  private async indexBatch(end: number): Promise<void> {
    const start = this.meta.indexedLength
    const batch = new IndexBatch(this, this.meta)
    for (let seq = start; seq < end; seq++) {
      let record: VersionRecord
      try {
        record = await this.log.read(logSeq(seq))
      } catch (error) {
        if (!isClusterError(error, 'BAD_MESSAGE')) throw error
        batch.invalidRecords++
        continue
      }
      await batch.add(logSeq(seq), record, (at) => this.log.read(at))
    }
    const fingerprint = await this.log.fingerprint(end)
    const meta = batch.meta(end, fingerprint)
    await this.derived.batch([
      ...batch.operations.map(([key, value]) => ({ type: 'put' as const, key, value })),
      { type: 'put', key: META_KEY, value: JSON.stringify(meta) },
    ])
    this.meta = meta
  }

  /** Used while indexing: the latest indexed version, before the batch being built. */
  storedLatest(path: DatasetPath): Promise<VersionEntry | null> {
    return this.latest(path, this.meta.indexedLength)
  }

  private checkLength(atLength: number): void {
    if (!(Number.isSafeInteger(atLength) && atLength >= 0 && atLength <= this.meta.indexedLength))
      throw ClusterError.badArgument(
        `log length ${atLength} is beyond the indexed ${this.meta.indexedLength}`,
      )
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work)
    this.queue = result.catch(() => undefined)
    return result
  }
}

/** The entries one database batch adds, with what the batch itself already decided. */
class IndexBatch {
  readonly operations: [string, string][] = []
  invalidRecords: number
  private readonly index: VersionIndex
  private readonly previous: IndexMeta
  private readonly latestInBatch = new Map<DatasetPath, VersionEntry>()
  private readonly digest: Buffer
  private timeMsMax: number

  constructor(index: VersionIndex, previous: IndexMeta) {
    this.index = index
    this.previous = previous
    this.invalidRecords = previous.invalidRecords
    this.digest = Buffer.from(previous.entryDigest, 'hex')
    this.timeMsMax = previous.timeMsMax
  }

  async add(seq: LogSeq, record: VersionRecord, read: ReadRecord): Promise<void> {
    // Continuation records only mean something through the put that follows them.
    if (record.kind === 'chunks') return
    const entries = await this.entriesFor(seq, record, read)
    if (entries === null) {
      this.invalidRecords++
      return
    }
    // A master's clock can step back; times in the index never do, so time maps to length.
    this.timeMsMax = Math.max(this.timeMsMax, record.recordedAtMs)
    this.put(`${TIME_PREFIX}${padNumber(this.timeMsMax)}${SEPARATOR}${padNumber(seq)}`, '')
    if (record.kind === 'recoveryPoint') {
      const point: RecoveryPoint = {
        label: record.label,
        timeMs: record.timeMs,
        seq,
        length: seq + 1,
      }
      this.put(`${POINT_PREFIX}${record.label}${SEPARATOR}${padNumber(seq)}`, JSON.stringify(point))
    }
    for (const entry of entries) {
      this.put(versionKey(entry.path, seq), JSON.stringify(entry))
      this.latestInBatch.set(entry.path, entry)
    }
  }

  meta(indexedLength: number, fingerprint: string): IndexMeta {
    return {
      formatVersion: INDEX_FORMAT_VERSION,
      logKey: this.previous.logKey,
      indexedLength,
      fingerprint,
      entryCount: this.previous.entryCount + this.operations.length,
      entryDigest: this.digest.toString('hex'),
      invalidRecords: this.invalidRecords,
      timeMsMax: this.timeMsMax,
    }
  }

  /** The version entries a record makes, or null when it is inconsistent with the log. */
  private async entriesFor(
    seq: LogSeq,
    record: Exclude<VersionRecord, { kind: 'chunks' }>,
    read: ReadRecord,
  ): Promise<VersionEntry[] | null> {
    const { recordedAtMs } = record
    switch (record.kind) {
      case 'put':
      case 'patch':
        return (await isWholeVersion(seq, record, read))
          ? [
              {
                kind: 'file',
                seq,
                path: record.path,
                recordedAtMs,
                sizeBytes: record.sizeBytes,
                mode: record.mode,
                mtimeMs: record.mtimeMs,
                fileHash: record.fileHash,
                contentSeq: seq,
                renamedFrom: null,
              },
            ]
          : null
      case 'rename': {
        const source =
          this.latestInBatch.get(record.from) ?? (await this.index.storedLatest(record.from))
        if (source?.kind !== 'file') return null
        return [
          { kind: 'deleted', seq, path: record.from, recordedAtMs, renamedTo: record.to },
          { ...source, seq, path: record.to, recordedAtMs, renamedFrom: record.from },
        ]
      }
      case 'delete':
        return [{ kind: 'deleted', seq, path: record.path, recordedAtMs, renamedTo: null }]
      case 'symlink':
        return [{ kind: 'symlink', seq, path: record.path, recordedAtMs, target: record.target }]
      case 'directory':
        return [
          {
            kind: 'directory',
            seq,
            path: record.path,
            recordedAtMs,
            mode: record.mode,
            mtimeMs: record.mtimeMs,
          },
        ]
      case 'recoveryPoint':
        return []
    }
  }

  private put(key: string, value: string): void {
    this.operations.push([key, value])
    xorInto(this.digest, entryHash(key, value))
  }
}

/**
 * A put is a version only with all its continuation records right before it; a patch only
 * when its base is an earlier whole put that its edits fit.
 */
async function isWholeVersion(
  seq: LogSeq,
  record: PutRecord | PatchRecord,
  read: ReadRecord,
): Promise<boolean> {
  if (record.kind === 'put' && record.continuationCount === 0) return true
  try {
    await versionChunkList(seq, read)
    return true
  } catch (error) {
    if (isClusterError(error, 'BAD_MESSAGE')) return false
    throw error
  }
}

/** Entries read from a database iterator per step of an iteration. */
const ITERATION_STEP_ENTRIES_MAX = 1000

/**
 * The entries in a range, read a step at a time through an iterator this function closes.
 * Not abstract-level's own async iteration: when the database closed under it mid-way (a
 * node stopping during a restore), its rejection was handled a turn late, which Node takes
 * for an unhandled rejection, and by default a process dies of one.
 */
async function* readRange(
  database: LevelDatabase,
  range: { gt?: string; gte?: string; lt?: string; limit?: number } = {},
): AsyncGenerator<[key: string, value: string]> {
  const iterator = database.iterator(range)
  try {
    for (;;) {
      const step = await iterator.nextv(ITERATION_STEP_ENTRIES_MAX)
      if (step.length === 0) return
      yield* step
    }
  } finally {
    await iterator.close()
  }
}

function emptyMeta(logKey: string): IndexMeta {
  return {
    formatVersion: INDEX_FORMAT_VERSION,
    logKey,
    indexedLength: 0,
    fingerprint: 'empty',
    entryCount: 0,
    entryDigest: ZERO_DIGEST,
    invalidRecords: 0,
    timeMsMax: 0,
  }
}

function versionKeyPrefix(path: string): string {
  return `${VERSION_PREFIX}${path}${SEPARATOR}`
}

function versionKey(path: string, seq: LogSeq): string {
  return `${versionKeyPrefix(path)}${padNumber(seq)}`
}

function padNumber(value: number): string {
  assert(Number.isSafeInteger(value) && value >= 0, 'index keys hold non-negative integers')
  return String(value).padStart(NUMBER_DIGITS, '0')
}

/** An order-independent digest of the entry set: XOR of every entry's hash. */
function entryHash(key: string, value: string): Buffer {
  return createHash('sha256').update(key).update(SEPARATOR).update(value).digest()
}

function xorInto(target: Buffer, source: Buffer): void {
  for (let index = 0; index < target.length; index++)
    target[index] = target[index]! ^ source[index]!
}

function parseEntry(value: string): VersionEntry {
  try {
    return JSON.parse(value) as VersionEntry
  } catch (error) {
    throw ClusterError.corruptStore('the version index is damaged: reindex it', error)
  }
}

function parsePoint(value: string): RecoveryPoint {
  try {
    return JSON.parse(value) as RecoveryPoint
  } catch (error) {
    throw ClusterError.corruptStore('the version index is damaged: reindex it', error)
  }
}

async function isEmpty(database: LevelDatabase): Promise<boolean> {
  for await (const _key of database.keys({ limit: 1 })) return false
  return true
}
