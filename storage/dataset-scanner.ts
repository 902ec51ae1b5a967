// The scan: walk a dataset's directory, compare it with what the log already holds, and
// append what changed. A file is read only when its size, mtime, inode or mode moved since
// the last scan saw it (the scan state, a hint kept beside the index; the log stays the
// truth, so a stale hint only costs a re-read). A new path holding the inode and content of
// a vanished one is a rename. A fault on one entry (unreadable, vanished, special, a name
// that is not UTF-8, a path over the limit) is a warning in the result and never stops the
// scan; an entry that could not be examined keeps its last version until a later scan.
// A scoped scan (what a change watcher asks for) does the same for a few paths and their
// subtrees only: it reads only their index entries and scan state, so one changed file
// costs time in proportion to its subtree and history, not to the dataset's.
import { join } from 'node:path'
import { lstat, readdir, readlink, stat } from 'node:fs/promises'
import type { BigIntStats } from 'node:fs'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import type { ChunkStoreApi } from './chunk-types.ts'
import { PATCH_BASE_CHUNKS_MIN, fileVersionDrafts } from './chunk-list-diff.ts'
import {
  appendAfterFlush,
  identityOf,
  ingestFile,
  millisecondsOf,
  sameIdentity,
  type FileIdentity,
} from './ingest.ts'
import type { FileEntry, LevelDatabase, LiveEntry, VersionIndex } from './version-index.ts'
import { forEachBounded, mapBounded } from './for-each-bounded.ts'
import { patchBaseOf, type PatchBase } from './version-content.ts'
import type { VersionLogWriter } from './version-log.ts'
import {
  checkDatasetPath,
  checkSymlinkTarget,
  parentPath,
  MODE_BITS_MAX,
  type DatasetPath,
  type FileVersion,
  type LogSeq,
  type RecordDraft,
} from './version-record.ts'

/** Entries one scan examines; a dataset beyond this is refused rather than half-scanned. */
export const SCAN_ENTRIES_MAX = 10_000_000
/** Records appended together (one chunk store flush, one log append). */
export const SCAN_BATCH_RECORDS_MAX = 256
/** File bytes read before their records are appended. */
export const SCAN_BATCH_BYTES_MAX = 64 * 1024 * 1024
/**
 * A file modified this close before the scan started may change again within the same
 * timestamp tick without its mtime or ctime moving, so it is read again next time (git's
 * "racy clean").
 */
export const RACY_MARGIN_NS = 2_000_000_000n
/**
 * Scopes one scan takes: each costs a few range reads, so beyond this many a full scan is
 * as cheap, and the scan does a full one itself.
 */
export const SCAN_SCOPES_MAX = 4096
/**
 * A scoped scan reads the index and the scan state of each scope, several scopes at once:
 * one by one, the 4,000 reads of a burst of 1,000 new files waited on each other's trip
 * to the thread pool.
 */
export const SCOPE_READS_IN_FLIGHT_MAX = 16

export type ScanWarningCode =
  | 'UNREADABLE'
  | 'VANISHED'
  | 'FILE_UNSTABLE'
  | 'SPECIAL_FILE'
  | 'NAME_NOT_UTF8'
  | 'PATH_TOO_LONG'
  | 'BAD_SYMLINK'

export interface ScanWarning {
  /** Dataset-relative; bytes that are not UTF-8 appear as \xHH. */
  readonly path: string
  readonly code: ScanWarningCode
  readonly message: string
}

export interface ScanChange {
  readonly kind: 'put' | 'rename' | 'delete' | 'symlink' | 'directory'
  readonly path: DatasetPath
  /** The old path of a rename. */
  readonly from: DatasetPath | null
  /** The record that made the change (for a put, the put record after its continuations). */
  readonly seq: LogSeq
  /** The file content of a put or rename. */
  readonly version: FileVersion | null
}

export interface ScanResult {
  readonly changes: readonly ScanChange[]
  readonly warnings: readonly ScanWarning[]
  /** The log length after the scan. */
  readonly length: number
  readonly filesRead: number
  readonly bytesRead: number
  /** The merged scopes that were examined; null when the whole dataset was. */
  readonly scopes: readonly DatasetPath[] | null
}

type Found =
  | { readonly type: 'file'; readonly identity: FileIdentity }
  | { readonly type: 'directory'; readonly mode: number; readonly mtimeMs: number }
  | { readonly type: 'symlink'; readonly target: string }

/** What the last scan knew of a file: its identity when it was the version `seq`. */
interface ScanStateEntry {
  readonly identity: FileIdentity
  readonly seq: number
  /** Modified too close to that scan to trust an unchanged identity. */
  readonly racy: boolean
}

export interface ScanOptions {
  readonly signal?: AbortSignal
  /** Hears each batch of changes once its append has returned: what it hears is durable. */
  readonly onRecorded?: (changes: readonly ScanChange[]) => void
  /** Records per append, 1..SCAN_BATCH_RECORDS_MAX: smaller batches are durable sooner. */
  readonly batchRecordsMax?: number
  /**
   * Dataset-relative paths to examine, each with its subtree ('' or absent: the whole
   * dataset; []: nothing). Nested and repeated scopes are merged; an invalid one ('..',
   * absolute, empty segments, over the path limit) is BAD_ARGUMENT; more than
   * SCAN_SCOPES_MAX makes a full scan. A scope records what a full scan would record for
   * it: a rename only when both its paths are in this scan's scopes (else the new path is
   * a put and the old one stays until its own scope or a full scan). The parents of a
   * scope are not examined: their mtimes wait for the periodic full scan.
   */
  readonly scopes?: readonly string[]
}

type PendingChange = Omit<ScanChange, 'seq'>

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

export interface DatasetScannerOptions {
  /** The dataset's directory (absolute). */
  readonly directory: string
  readonly log: VersionLogWriter
  readonly index: VersionIndex
  readonly chunkStore: ChunkStoreApi
  /** The dataset's scan-state sublevel. */
  readonly scanState: LevelDatabase
}

export class DatasetScanner {
  private readonly options: DatasetScannerOptions

  constructor(options: DatasetScannerOptions) {
    this.options = options
  }

  /**
   * Scans once. `onRecorded` hears each batch of changes once its append has returned, so
   * whatever it was told is durable in the log.
   */
  async scan(options: ScanOptions = {}): Promise<ScanResult> {
    const batchRecordsMax = options.batchRecordsMax ?? SCAN_BATCH_RECORDS_MAX
    if (!(
      Number.isSafeInteger(batchRecordsMax) &&
      batchRecordsMax >= 1 &&
      batchRecordsMax <= SCAN_BATCH_RECORDS_MAX
    ))
      throw ClusterError.badArgument(`batchRecordsMax must be 1..${SCAN_BATCH_RECORDS_MAX}`)
    const scopes = mergeScopes(options.scopes)
    const { index } = this.options
    const scanStartNs = BigInt(Date.now()) * 1_000_000n
    await index.catchUp()
    const previous = new Map<DatasetPath, LiveEntry>()
    if (scopes === null) {
      for await (const entry of index.entries(index.indexedLength)) previous.set(entry.path, entry)
    } else {
      // Kept in scope order, so that the scan goes the same way whichever read ends first.
      const inScopes = await mapBounded(scopes, SCOPE_READS_IN_FLIGHT_MAX, (scope) =>
        collect(index.entries(index.indexedLength, scope)),
      )
      for (const entry of inScopes.flat()) previous.set(entry.path, entry)
    }
    const state = await this.loadScanState(scopes)
    const warnings: ScanWarning[] = []
    const { found, unknown } = await this.walk(warnings, scopes)
    const run = new ScanRun(this.options, state, scanStartNs, warnings, options)

    const isUnknown = (path: DatasetPath): boolean => {
      for (let current: DatasetPath | null = path; current !== null; current = parentPath(current))
        if (unknown.has(current)) return true
      return false
    }
    // Paths whose last version must go: vanished, or now of another type.
    const gone = [...previous.values()].filter((entry) => {
      const now = found.get(entry.path)
      return now === undefined ? !isUnknown(entry.path) : now.type !== entry.kind
    })
    const renameSources = findRenameCandidates(gone, found, previous, state)
    const unrenamed = new Set(renameSources.values())
    // A vanished directory that held a rename source goes after the rename.
    const holdsSource = new Set<DatasetPath>()
    for (const source of unrenamed)
      for (let parent = parentPath(source); parent !== null; parent = parentPath(parent))
        holdsSource.add(parent)
    const deferred = gone.filter((entry) => holdsSource.has(entry.path) && !found.has(entry.path))
    const deferredPaths = new Set(deferred.map((entry) => entry.path))
    const deleteNow = gone.filter(
      (entry) => !unrenamed.has(entry.path) && !deferredPaths.has(entry.path),
    )

    // 1. Deletes that do not wait for a rename, deepest first.
    for (const entry of sortDeepestFirst(deleteNow)) await run.delete(entry.path)
    // 2. Files and links, recorded in path order; files are read several at once ahead of
    // their turn, so that one file's reads and stores overlap the next ones'.
    const ahead = new ReadAhead()
    const recordInOrder = async (item: ReadAheadItem): Promise<void> => {
      const { path, before } = item
      if (item.read === null) {
        const target = (found.get(path) as Found & { type: 'symlink' }).target
        if (before?.kind !== 'symlink' || before.target !== target)
          await run.add([{ kind: 'symlink', path, target }], {
            kind: 'symlink',
            path,
            from: null,
            version: null,
          })
        return
      }
      const source = renameSources.get(path)
      const sourceEntry = source === undefined ? null : (previous.get(source) as FileEntry)
      const fileBefore = before?.kind === 'file' ? before : null
      if (await run.record(path, await item.read, fileBefore, sourceEntry))
        unrenamed.delete(source!)
    }
    try {
      for (const [path, now] of [...found].sort(([a], [b]) => compare(a, b))) {
        options.signal?.throwIfAborted()
        if (now.type === 'directory') continue
        const before = previous.get(path) ?? null
        if (now.type === 'symlink') {
          await ahead.push({ path, before, read: null, bytes: 0 }, recordInOrder)
          continue
        }
        const source = renameSources.get(path)
        const sourceEntry = source === undefined ? null : (previous.get(source) as FileEntry)
        const fileBefore = before?.kind === 'file' ? before : null
        await ahead.push(
          {
            path,
            before,
            read: run.read(path, now.identity, fileBefore, sourceEntry),
            bytes: now.identity.sizeBytes,
          },
          recordInOrder,
        )
      }
      await ahead.drain(recordInOrder)
    } finally {
      await ahead.settle()
    }
    // 3. Rename sources that were not renamed after all, and the directories that held them.
    const leftover = [...unrenamed].map((source) => previous.get(source)!)
    for (const entry of sortDeepestFirst([...leftover, ...deferred])) await run.delete(entry.path)
    // 4. Directories, deepest first: a directory's mtime is final once its entries are.
    for (const [path, now] of [...found].sort(([a], [b]) => compare(b, a))) {
      if (now.type !== 'directory') continue
      const before = previous.get(path)
      if (
        before?.kind === 'directory' &&
        before.mode === now.mode &&
        before.mtimeMs === now.mtimeMs
      )
        continue
      await run.add([{ kind: 'directory', path, mode: now.mode, mtimeMs: now.mtimeMs }], {
        kind: 'directory',
        path,
        from: null,
        version: null,
      })
    }
    await run.commit()
    await index.catchUp()
    return {
      changes: run.changes,
      warnings,
      length: this.options.log.length,
      filesRead: run.filesRead,
      bytesRead: run.bytesRead,
      scopes,
    }
  }

  /** The hints of the scopes (each path and the keys below it), or of the whole dataset. */
  private async loadScanState(
    scopes: readonly DatasetPath[] | null,
  ): Promise<Map<DatasetPath, ScanStateEntry>> {
    const ranges =
      scopes === null
        ? [{}]
        : scopes.flatMap((scope) => [
            { gte: scope, lte: scope },
            { gt: `${scope}/`, lt: `${scope}0` }, // '0' follows '/'
          ])
    const state = new Map<DatasetPath, ScanStateEntry>()
    await forEachBounded(ranges, SCOPE_READS_IN_FLIGHT_MAX, async (range) => {
      for await (const [key, value] of this.options.scanState.iterator(range)) {
        try {
          state.set(key as DatasetPath, JSON.parse(value) as ScanStateEntry)
        } catch {
          // A damaged hint only means the file is read again.
        }
      }
    })
    return state
  }

  /**
   * Every entry of the dataset, or of the scopes with their subtrees, and the paths that could
   * not be examined (with their subtrees). A scope that is not there, or lies below something
   * other than a directory (a file, a link), is absent: its last versions are to be deleted.
   */
  private async walk(
    warnings: ScanWarning[],
    scopes: readonly DatasetPath[] | null,
  ): Promise<{ found: Map<DatasetPath, Found>; unknown: Set<DatasetPath> }> {
    const root = this.options.directory
    const rootStats = await stat(root).catch((error: unknown) => {
      throw ClusterError.notFound(
        `dataset directory ${root} is not there: ${(error as Error).message}`,
      )
    })
    if (!rootStats.isDirectory())
      throw ClusterError.badArgument(`dataset directory ${root} is not a directory`)
    const found = new Map<DatasetPath, Found>()
    const unknown = new Set<DatasetPath>()
    const warn = (path: string, code: ScanWarningCode, message: string): void => {
      warnings.push({ path, code, message: `${path}: ${message}` })
    }
    const stack: (DatasetPath | '')[] = scopes === null ? [''] : []
    // A listed entry that is gone is a fault (its last version stays); a scope that is gone is a delete.
    const examine = async (
      path: DatasetPath,
      listed: boolean,
      looked: BigIntStats | { readonly error: unknown },
    ): Promise<void> => {
      if (found.size >= SCAN_ENTRIES_MAX)
        throw ClusterError.refused(`dataset ${root} has more than ${SCAN_ENTRIES_MAX} entries`)
      const absolute = join(root, path)
      const stats = looked
      if ('error' in stats) {
        const { error } = stats
        const vanished = isVanished(error)
        if (vanished && !listed) return
        warn(path, vanished ? 'VANISHED' : 'UNREADABLE', `cannot stat (${errorCode(error)})`)
        unknown.add(path)
        return
      }
      if (stats.isDirectory()) {
        found.set(path, {
          type: 'directory',
          mode: modeOf(stats),
          mtimeMs: millisecondsOf(stats.mtimeNs),
        })
        stack.push(path)
      } else if (stats.isFile()) {
        found.set(path, { type: 'file', identity: identityOf(stats) })
      } else if (stats.isSymbolicLink()) {
        const target = await this.readTarget(absolute, path, warn, unknown)
        if (target !== null) found.set(path, { type: 'symlink', target })
      } else {
        warn(
          path,
          'SPECIAL_FILE',
          'not a regular file, directory or symlink (socket, fifo or device); skipped',
        )
      }
    }
    // Entries are looked at many at once, then taken in order, so warnings keep their order.
    const examineAll = async (paths: readonly DatasetPath[], listed: boolean): Promise<void> => {
      const looked = await lstatAll(paths.map((path) => join(root, path)))
      for (const [index, path] of paths.entries()) await examine(path, listed, looked[index]!)
    }
    const parents = new Map<DatasetPath, ParentState>()
    const scopesInDirectories: DatasetPath[] = []
    for (const scope of scopes ?? []) {
      const parent = await checkParents(root, scope, parents)
      if (parent === 'directory') {
        scopesInDirectories.push(scope)
      } else if (parent !== 'absent') {
        warn(scope, 'UNREADABLE', `cannot stat ${parent.path} (${errorCode(parent.error)})`)
        unknown.add(scope)
      }
    }
    await examineAll(scopesInDirectories, false)
    while (stack.length > 0) {
      const directory = stack.pop()!
      let names: Buffer[]
      try {
        names = await readdir(join(root, directory), { encoding: 'buffer' })
      } catch (error) {
        if (directory === '') throw ClusterError.io(`cannot list dataset directory ${root}`, error)
        const vanished = isVanished(error)
        warn(
          directory,
          vanished ? 'VANISHED' : 'UNREADABLE',
          `cannot list directory (${errorCode(error)})`,
        )
        unknown.add(directory)
        continue
      }
      const listed: DatasetPath[] = []
      for (const nameBytes of names) {
        const name = decodeName(nameBytes)
        const shown = `${directory === '' ? '' : `${directory}/`}${name ?? escapeBytes(nameBytes)}`
        if (name === null) {
          warn(shown, 'NAME_NOT_UTF8', 'name is not UTF-8; skipped')
          continue
        }
        const problem = checkDatasetPath(shown)
        if (problem !== null) {
          warn(shown, 'PATH_TOO_LONG', `${problem}; skipped`)
          continue
        }
        listed.push(shown as DatasetPath)
      }
      await examineAll(listed, true)
    }
    return { found, unknown }
  }

  private async readTarget(
    absolute: string,
    path: DatasetPath,
    warn: (path: string, code: ScanWarningCode, message: string) => void,
    unknown: Set<DatasetPath>,
  ): Promise<string | null> {
    let bytes: Buffer
    try {
      bytes = await readlink(absolute, { encoding: 'buffer' })
    } catch (error) {
      warn(
        path,
        isVanished(error) ? 'VANISHED' : 'UNREADABLE',
        `cannot read link (${errorCode(error)})`,
      )
      unknown.add(path)
      return null
    }
    const target = decodeName(bytes)
    const problem = target === null ? 'target is not UTF-8' : checkSymlinkTarget(target)
    if (problem !== null) {
      warn(path, 'BAD_SYMLINK', `${problem}; skipped`)
      return null
    }
    return target
  }
}

/** lstat() calls a walk has in flight at once. */
export const LSTATS_IN_FLIGHT_MAX = 32

/** The lstat of every path (or why it failed), at most LSTATS_IN_FLIGHT_MAX at once. */
async function lstatAll(
  absolutePaths: readonly string[],
): Promise<(BigIntStats | { readonly error: unknown })[]> {
  const looked: (BigIntStats | { readonly error: unknown })[] = new Array(absolutePaths.length)
  const indexes = absolutePaths.map((_, index) => index)
  await forEachBounded(indexes, LSTATS_IN_FLIGHT_MAX, async (index) => {
    looked[index] = await lstat(absolutePaths[index]!, { bigint: true }).catch(
      (error: unknown) => ({ error }),
    )
  })
  return looked
}

/** What read() found of a file, for record() to act on in its turn. */
type FileRead =
  | { readonly kind: 'known' }
  | { readonly kind: 'skipped'; readonly problem: ClusterError }
  | {
      readonly kind: 'read'
      readonly version: FileVersion
      readonly identity: FileIdentity
      readonly patchBase: PatchBase | null
    }

/** A file being read ahead of its turn (or a link, with nothing to read), in path order. */
interface ReadAheadItem {
  readonly path: DatasetPath
  readonly before: LiveEntry | null
  readonly read: Promise<FileRead> | null
  readonly bytes: number
}

/**
 * Files read ahead at once, and their bytes: small files overlap many at once (each is a
 * few file system calls that wait on the thread pool), big ones few (each holds its read
 * buffers); one file bigger than the byte bound is read alone.
 */
export const READ_AHEAD_FILES_MAX = 16
export const READ_AHEAD_BYTES_MAX = 32 * 1024 * 1024

/** Items in path order; each is recorded in its turn once the window must make room. */
class ReadAhead {
  readonly #items: ReadAheadItem[] = []
  #bytes = 0

  /** Adds an item, first recording the oldest ones until the new one fits the window. */
  async push(item: ReadAheadItem, record: (item: ReadAheadItem) => Promise<void>): Promise<void> {
    item.read?.catch(() => undefined) // awaited in its turn, or by settle()
    while (
      this.#items.length > 0 &&
      (this.#items.length >= READ_AHEAD_FILES_MAX ||
        this.#bytes + item.bytes > READ_AHEAD_BYTES_MAX)
    )
      await this.#recordOldest(record)
    this.#items.push(item)
    this.#bytes += item.bytes
  }

  async drain(record: (item: ReadAheadItem) => Promise<void>): Promise<void> {
    while (this.#items.length > 0) await this.#recordOldest(record)
  }

  /** Waits for every read still running (after a failure: nothing is left behind the scan). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#items.splice(0).map((item) => item.read))
    this.#bytes = 0
  }

  async #recordOldest(record: (item: ReadAheadItem) => Promise<void>): Promise<void> {
    const oldest = this.#items[0]!
    await record(oldest)
    this.#items.shift()
    this.#bytes -= oldest.bytes
  }
}

/** Appends a scan's records in bounded batches and keeps the scan state in step. */
class ScanRun {
  readonly changes: ScanChange[] = []
  filesRead = 0
  bytesRead = 0
  private readonly options: DatasetScannerOptions
  private readonly state: Map<DatasetPath, ScanStateEntry>
  private readonly scanStartNs: bigint
  private readonly warnings: ScanWarning[]
  private readonly hooks: ScanOptions
  private drafts: RecordDraft[] = []
  private pending: { change: PendingChange; lastDraft: number; identity: FileIdentity | null }[] =
    []
  /** Files read unchanged: their state is refreshed with the next batch. */
  private unchanged: { path: DatasetPath; identity: FileIdentity; seq: number }[] = []
  private batchBytes = 0

  constructor(
    options: DatasetScannerOptions,
    state: Map<DatasetPath, ScanStateEntry>,
    scanStartNs: bigint,
    warnings: ScanWarning[],
    hooks: ScanOptions,
  ) {
    this.options = options
    this.state = state
    this.scanStartNs = scanStartNs
    this.warnings = warnings
    this.hooks = hooks
  }

  /**
   * Examines one regular file, the part that may run beside other files: nothing when its
   * identity shows it unchanged, else it is read (its chunks stored) and compared later by
   * record(), in path order.
   */
  async read(
    path: DatasetPath,
    identity: FileIdentity,
    before: FileEntry | null,
    source: FileEntry | null,
  ): Promise<FileRead> {
    const known = this.state.get(path)
    if (
      source === null &&
      before !== null &&
      known !== undefined &&
      known.seq === before.seq &&
      !known.racy &&
      sameIdentity(known.identity, identity)
    )
      return { kind: 'known' }
    const ingested = await ingestFile({
      absolutePath: join(this.options.directory, path),
      path,
      chunkStore: this.options.chunkStore,
      ...(this.hooks.signal === undefined ? {} : { signal: this.hooks.signal }),
    })
    if (ingested.kind === 'skipped') return { kind: 'skipped', problem: ingested.problem }
    const { version } = ingested
    const changed =
      !(source !== null && sameContent(version, source)) &&
      !(before !== null && sameContent(version, before))
    return {
      kind: 'read',
      version,
      identity: ingested.identity,
      patchBase: changed ? await this.patchBase(version, before) : null,
    }
  }

  /**
   * Records what read() found, in path order: a rename of `source`, a new version, or
   * nothing new. Returns true when it was a rename.
   */
  async record(
    path: DatasetPath,
    found: FileRead,
    before: FileEntry | null,
    source: FileEntry | null,
  ): Promise<boolean> {
    if (found.kind === 'known') return false
    if (found.kind === 'skipped') {
      const { code, message } = found.problem
      const warning =
        code === 'NOT_FOUND' ? 'VANISHED' : code === 'IO_ERROR' ? 'UNREADABLE' : 'FILE_UNSTABLE'
      this.warnings.push({ path, code: warning, message })
      return false
    }
    const { version, identity } = found
    this.filesRead++
    this.bytesRead += version.sizeBytes
    if (source !== null && sameContent(version, source)) {
      await this.add(
        [{ kind: 'rename', from: source.path, to: path }],
        { kind: 'rename', path, from: source.path, version },
        identity,
      )
      return true
    }
    if (before !== null && sameContent(version, before)) {
      this.unchanged.push({ path, identity, seq: before.seq })
      return false
    }
    await this.add(
      fileVersionDrafts(version, found.patchBase),
      { kind: 'put', path, from: null, version },
      identity,
      version.sizeBytes,
    )
    return false
  }

  /** What a new version of a big file may be patched against: the base of the version before. */
  private async patchBase(
    version: FileVersion,
    before: FileEntry | null,
  ): Promise<PatchBase | null> {
    if (before === null || version.chunks.length < PATCH_BASE_CHUNKS_MIN) return null
    try {
      return await patchBaseOf(before.contentSeq, (seq) => this.options.log.read(seq))
    } catch (error) {
      // A log that no longer holds the version before: a whole put needs nothing of it.
      if (isClusterError(error, 'BAD_MESSAGE')) return null
      throw error
    }
  }

  delete(path: DatasetPath): Promise<void> {
    return this.add([{ kind: 'delete', path }], { kind: 'delete', path, from: null, version: null })
  }

  async add(
    drafts: readonly RecordDraft[],
    change: PendingChange,
    identity: FileIdentity | null = null,
    bytes = 0,
  ): Promise<void> {
    this.drafts.push(...drafts)
    this.pending.push({ change, lastDraft: this.drafts.length - 1, identity })
    this.batchBytes += bytes
    const recordsMax = this.hooks.batchRecordsMax ?? SCAN_BATCH_RECORDS_MAX
    if (this.drafts.length >= recordsMax || this.batchBytes >= SCAN_BATCH_BYTES_MAX)
      await this.commit()
  }

  /** Flushes chunks, appends the batch, then brings the scan state up to date. */
  async commit(): Promise<void> {
    const { chunkStore, log, scanState } = this.options
    const committed: ScanChange[] = []
    if (this.drafts.length > 0) {
      const { firstSeq } = await appendAfterFlush(chunkStore, log, this.drafts)
      for (const { change, lastDraft } of this.pending)
        committed.push({ ...change, seq: (firstSeq + lastDraft) as LogSeq })
    }
    const operations: { type: 'put' | 'del'; key: string; value?: string }[] = []
    const remember = (path: DatasetPath, identity: FileIdentity, seq: number): void => {
      const racy = [identity.mtimeNs, identity.ctimeNs].some(
        (ns) => BigInt(ns) > this.scanStartNs - RACY_MARGIN_NS,
      )
      operations.push({
        type: 'put',
        key: path,
        value: JSON.stringify({ identity, seq, racy } satisfies ScanStateEntry),
      })
    }
    committed.forEach((change, position) => {
      const identity = this.pending[position]!.identity
      if (change.from !== null) operations.push({ type: 'del', key: change.from })
      if (identity !== null) remember(change.path, identity, change.seq)
      else operations.push({ type: 'del', key: change.path })
    })
    for (const { path, identity, seq } of this.unchanged) remember(path, identity, seq)
    if (operations.length > 0)
      await scanState.batch(
        operations.map((operation) =>
          operation.type === 'put'
            ? { type: 'put' as const, key: operation.key, value: operation.value! }
            : { type: 'del' as const, key: operation.key },
        ),
      )
    this.drafts = []
    this.pending = []
    this.unchanged = []
    this.batchBytes = 0
    if (committed.length > 0) {
      this.changes.push(...committed)
      this.hooks.onRecorded?.(committed)
    }
  }
}

/**
 * Rename candidates: a new (or replaced) file whose inode, size and mtime are those a
 * vanished file had at the last scan. Its content is compared once it has been read.
 * Returns target path → source path.
 */
function findRenameCandidates(
  gone: readonly LiveEntry[],
  found: ReadonlyMap<DatasetPath, Found>,
  previous: ReadonlyMap<DatasetPath, LiveEntry>,
  state: ReadonlyMap<DatasetPath, ScanStateEntry>,
): Map<DatasetPath, DatasetPath> {
  const sourcesByInode = new Map<string, { path: DatasetPath; identity: FileIdentity }>()
  for (const entry of gone) {
    const known = state.get(entry.path)
    if (
      entry.kind === 'file' &&
      !found.has(entry.path) &&
      known !== undefined &&
      known.seq === entry.seq
    )
      sourcesByInode.set(known.identity.inode, { path: entry.path, identity: known.identity })
  }
  const candidates = new Map<DatasetPath, DatasetPath>()
  if (sourcesByInode.size === 0) return candidates
  for (const [path, now] of found) {
    if (now.type !== 'file') continue
    const before = previous.get(path)
    const knownInode = state.get(path)?.identity.inode
    if (before?.kind === 'file' && knownInode === now.identity.inode) continue
    const source = sourcesByInode.get(now.identity.inode)
    if (source === undefined) continue
    if (
      source.identity.sizeBytes !== now.identity.sizeBytes ||
      source.identity.mtimeNs !== now.identity.mtimeNs
    )
      continue
    candidates.set(path, source.path)
    sourcesByInode.delete(now.identity.inode)
  }
  return candidates
}

/**
 * The scopes of a scan, validated, without repeats and without scopes inside other scopes,
 * in path order; null for the whole dataset.
 */
function mergeScopes(scopes: readonly string[] | undefined): DatasetPath[] | null {
  if (scopes === undefined || scopes.length > SCAN_SCOPES_MAX) return null
  for (const scope of scopes) {
    const problem = scope === '' ? null : checkDatasetPath(scope)
    if (problem !== null)
      throw ClusterError.badArgument(`bad scan scope ${JSON.stringify(scope)}: ${problem}`)
  }
  if (scopes.includes('')) return null
  const all = new Set(scopes as readonly DatasetPath[])
  const insideAnother = (scope: DatasetPath): boolean => {
    for (let parent = parentPath(scope); parent !== null; parent = parentPath(parent))
      if (all.has(parent)) return true
    return false
  }
  return [...all].filter((scope) => !insideAnother(scope)).sort(compare)
}

/** What the parents of a scope are: all real directories, or not (the scope is absent), or unknown. */
type ParentState = 'directory' | 'absent' | { readonly path: DatasetPath; readonly error: unknown }

/**
 * Checks the parents of `scope` from the top, each once per scan (`checked`): a scope below a
 * link is not in the dataset, and a full scan would never have followed that link.
 */
async function checkParents(
  root: string,
  scope: DatasetPath,
  checked: Map<DatasetPath, ParentState>,
): Promise<ParentState> {
  const parents: DatasetPath[] = []
  for (let parent = parentPath(scope); parent !== null; parent = parentPath(parent))
    parents.unshift(parent)
  for (const parent of parents) {
    let state = checked.get(parent)
    if (state === undefined) {
      state = await lstat(join(root, parent)).then(
        (stats): ParentState => (stats.isDirectory() ? 'directory' : 'absent'),
        (error: unknown): ParentState => (isVanished(error) ? 'absent' : { path: parent, error }),
      )
      checked.set(parent, state)
    }
    if (state !== 'directory') return state
  }
  return 'directory'
}

function sameContent(version: FileVersion, entry: FileEntry): boolean {
  return (
    version.fileHash === entry.fileHash &&
    version.sizeBytes === entry.sizeBytes &&
    version.mode === entry.mode &&
    version.mtimeMs === entry.mtimeMs
  )
}

/** Reverse order puts every path after the paths below it. */
function sortDeepestFirst<T extends { readonly path: DatasetPath }>(entries: readonly T[]): T[] {
  return [...entries].sort((a, b) => compare(b.path, a.path))
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function modeOf(stats: BigIntStats): number {
  return Number(stats.mode) & MODE_BITS_MAX
}

function decodeName(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    return null
  }
}

/** Printable ASCII as is, every other byte as \xHH: a name that is not UTF-8, shown safely. */
export function escapeBytes(bytes: Uint8Array): string {
  let text = ''
  for (const byte of bytes)
    text +=
      byte >= 0x20 && byte < 0x7f && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, '0')}`
  return text
}

function isVanished(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message
}

/** Everything an async iterable yields. */
async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = []
  for await (const item of items) all.push(item)
  return all
}
