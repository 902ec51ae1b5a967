// A live mirror: a directory kept equal to a dataset's checkout at the applied log length.
// The log (own or replicated) is applied in bounded batches. A batch does not replay
// operations; it makes every path the batch's records touched equal to its state at the
// batch's end, so applying a batch twice (after a crash) gives the same result. The
// applied length is kept in a small state file beside the mirror and advanced only after
// a batch is complete and synced. Files go through temp file, fsync, rename, many at once;
// a crash's leftover temporary files are removed when their directories are touched again.
// A big file with a small change is patched in place instead (mirror-patch.ts).
import { createHash } from 'node:crypto'
import { createReadStream, type Stats } from 'node:fs'
import { mkdir, open, readFile, readdir, realpath, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import type { ChunkStoreApi } from './chunk-types.ts'
import type { DatasetReader } from './dataset-reader.ts'
import { PATCH_FILE_BYTES_MIN, applyPatch, planPatch } from './mirror-patch.ts'
import { SCAN_ENTRIES_MAX } from './dataset-scanner.ts'
import { forEachBounded } from './for-each-bounded.ts'
import {
  baseName,
  ensureDirectory,
  lstatOrNull,
  fileSystemCall,
  removeTemporaryFiles,
  replaceWithSymlink,
  setMetadata,
  writeFileAtomically,
} from './restore.ts'
import type { DirectoryEntry, FileEntry, LiveEntry, VersionEntry } from './version-index.ts'
import type { VersionLogReader } from './version-log.ts'
import { logSeq, parentPath, type DatasetPath } from './version-record.ts'

/** Log records applied per batch (one state-file update each). */
export const MIRROR_BATCH_RECORDS_MAX = 1000
/** Files written at once: their syncs overlap, and the file system commits them together. */
export const MIRROR_FILES_IN_FLIGHT_MAX = 16
/** Index look-ups at once while a batch finds what each touched path should be. */
export const MIRROR_LOOKUPS_IN_FLIGHT_MAX = 32
const MIRROR_STATE_FORMAT_VERSION = 1
/** How long a following mirror waits before retrying an apply that lacked chunks. */
export const FOLLOW_RETRY_DELAY_MS = 1000

interface MirrorState {
  readonly formatVersion: number
  readonly logKey: string
  readonly appliedLength: number
}

export class Mirror {
  /** The mirror directory's real path. */
  readonly directory: string
  private readonly reader: DatasetReader
  private readonly log: VersionLogReader
  /** Chunk reads for patches in place (mirror-patch.ts); without it, files are rewritten whole. */
  private readonly chunkStore: Pick<ChunkStoreApi, 'get'> | null
  private readonly batchRecordsMax: number
  private applied: number
  /** No trustworthy state: the next apply compares the whole tree. */
  private needsReconcile: boolean
  private temporaryFilesMayRemain = true
  private queue: Promise<unknown> = Promise.resolve()

  private constructor(
    directory: string,
    sources: {
      reader: DatasetReader
      log: VersionLogReader
      chunkStore: Pick<ChunkStoreApi, 'get'> | null
    },
    state: MirrorState | null,
    batchRecordsMax: number,
  ) {
    this.directory = directory
    this.batchRecordsMax = batchRecordsMax
    this.reader = sources.reader
    this.log = sources.log
    this.chunkStore = sources.chunkStore
    this.applied = state?.appliedLength ?? 0
    this.needsReconcile = state === null
  }

  static async open(options: {
    reader: DatasetReader
    log: VersionLogReader
    directory: string
    /** Records per batch, 1..MIRROR_BATCH_RECORDS_MAX. */
    batchRecordsMax?: number
    /** Lets a big file with a small change be patched in place rather than rewritten. */
    chunkStore?: Pick<ChunkStoreApi, 'get'>
  }): Promise<Mirror> {
    const batchRecordsMax = options.batchRecordsMax ?? MIRROR_BATCH_RECORDS_MAX
    if (!(
      Number.isSafeInteger(batchRecordsMax) &&
      batchRecordsMax >= 1 &&
      batchRecordsMax <= MIRROR_BATCH_RECORDS_MAX
    ))
      throw ClusterError.badArgument(`batchRecordsMax must be 1..${MIRROR_BATCH_RECORDS_MAX}`)
    const directory = await fileSystemCall(`cannot open mirror ${options.directory}`, async () => {
      await mkdir(options.directory, { recursive: true })
      return realpath(options.directory)
    })
    const state = await readState(statePath(directory), options.log.keyHex)
    const { reader, log } = options
    const sources = { reader, log, chunkStore: options.chunkStore ?? null }
    return new Mirror(directory, sources, state, batchRecordsMax)
  }

  get appliedLength(): number {
    return this.applied
  }

  /** Where the applied length is kept: beside the mirror, not in it, so it never shows as content. */
  get statePath(): string {
    return statePath(this.directory)
  }

  /** Brings the mirror to the checkout at `length` (default: everything indexed). */
  applyTo(length: number = this.reader.index.indexedLength): Promise<number> {
    return this.exclusive(() =>
      fileSystemCall(`cannot update mirror ${this.directory}`, () => this.applyBatches(length)),
    )
  }

  private async applyBatches(length: number): Promise<number> {
    if (!(Number.isSafeInteger(length) && length <= this.reader.index.indexedLength))
      throw ClusterError.badArgument(
        `cannot mirror to ${length}: indexed ${this.reader.index.indexedLength}`,
      )
    if (this.needsReconcile) {
      await this.reconcile(length)
      await this.saveState(length)
      this.needsReconcile = false
    }
    while (this.applied < length) {
      const end = Math.min(length, this.applied + this.batchRecordsMax)
      await this.converge(await this.touchedPaths(this.applied, end), this.applied, end)
      await this.saveState(end)
    }
    return this.applied
  }

  /**
   * Follows the log as it grows until `signal` aborts (or the log closes). On a replica a
   * record can arrive before the chunks it names: the apply is then retried after a pause.
   */
  async follow(signal: AbortSignal, options: { retryDelayMs?: number } = {}): Promise<void> {
    const retryDelayMs = options.retryDelayMs ?? FOLLOW_RETRY_DELAY_MS
    while (!signal.aborted) {
      try {
        const indexed = await this.reader.index.catchUp()
        await this.applyTo(indexed)
        // On a replica the index waits for chunks to be complete: look again in a while.
        if (this.log.length > indexed)
          await sleep(retryDelayMs, undefined, { signal }).catch(() => undefined)
        else await this.log.waitForLength(indexed + 1, signal)
      } catch (error) {
        if (signal.aborted || isClusterError(error, 'CLOSED')) return
        if (!isClusterError(error, 'NOT_FOUND')) throw error
        await sleep(retryDelayMs, undefined, { signal }).catch(() => undefined)
      }
    }
  }

  private async touchedPaths(start: number, end: number): Promise<Set<DatasetPath>> {
    const touched = new Set<DatasetPath>()
    for (let seq = start; seq < end; seq++) {
      let record
      try {
        record = await this.log.read(logSeq(seq))
      } catch (error) {
        if (isClusterError(error, 'BAD_MESSAGE')) continue // the index skipped it too
        throw error
      }
      if (record.kind === 'rename') {
        touched.add(record.from)
        touched.add(record.to)
      } else if (record.kind !== 'recoveryPoint' && record.kind !== 'chunks')
        touched.add(record.path)
    }
    return touched
  }

  /** The first apply without state: every path of the checkout, and everything else in the mirror goes. */
  private async reconcile(length: number): Promise<void> {
    const touched = new Set<DatasetPath>()
    for await (const entry of this.reader.index.entries(length)) touched.add(entry.path)
    for (const path of await listTree(this.directory)) touched.add(path)
    await this.converge(touched, 0, length)
  }

  /** Makes every touched path in the mirror what it is at `length`. */
  private async converge(
    touched: ReadonlySet<DatasetPath>,
    batchStart: number,
    length: number,
  ): Promise<void> {
    const index = this.reader.index
    const parents = new Set<string>([''])
    for (const path of touched) parents.add(parentPath(path) ?? '')
    // A crash leaves temporary files only where its batch was writing; the first batch
    // after opening touches the same paths again (or reconciles everything), so look there.
    if (this.temporaryFilesMayRemain) {
      for (const parent of parents) {
        const directory = await this.existingDirectory(parent)
        if (directory !== null) await removeTemporaryFiles(directory)
      }
      this.temporaryFilesMayRemain = false
    }
    const desired = new Map<DatasetPath, VersionEntry | null>()
    await forEachBounded([...touched], MIRROR_LOOKUPS_IN_FLIGHT_MAX, async (path) => {
      desired.set(path, await index.latest(path, length))
    })

    // Renames first, while their sources are still in place: a move instead of a copy.
    const moved = new Set<DatasetPath>()
    for (const entry of desired.values())
      if (entry?.kind === 'file' && entry.renamedFrom !== null && entry.seq >= batchStart)
        if (await this.moveIfSame(entry.renamedFrom, entry)) moved.add(entry.path)

    const live = new Map<DatasetPath, LiveEntry>()
    for (const [path, entry] of [...desired].sort(([a], [b]) => (a < b ? 1 : -1))) {
      if (entry !== null && entry.kind !== 'deleted') {
        live.set(path, entry)
        continue
      }
      const existing = await this.existingPath(path)
      if (existing === null) continue
      await rm(existing, { recursive: true, force: true })
      // Whatever the checkout still holds below a removed path comes back.
      for await (const below of index.entries(length, path)) live.set(below.path, below)
    }
    // Directories and links in path order, one at a time; files go in parallel.
    const directories = new Map<string, string>()
    const files: { readonly entry: FileEntry; readonly directory: string }[] = []
    for (const entry of [...live.values()].sort((a, b) => (a.path < b.path ? -1 : 1))) {
      if (moved.has(entry.path)) continue
      const file = await this.prepare(entry, directories)
      if (file !== null) files.push(file)
    }
    await forEachBounded(files, MIRROR_FILES_IN_FLIGHT_MAX, async ({ entry, directory }) => {
      const path = join(directory, baseName(entry.path))
      const existing = await lstatOrNull(path)
      if (existing?.isDirectory() === true) await rm(path, { recursive: true, force: true })
      else if (await this.patched(entry, path, existing, batchStart)) return
      const content = await this.reader.open(entry)
      await writeFileAtomically(directory, baseName(entry.path), content, entry.mode, entry.mtimeMs)
    })
    await this.setDirectoryMetadata(parents, desired, length)
    await forEachBounded([...parents], MIRROR_FILES_IN_FLIGHT_MAX, async (parent) => {
      const directory = await this.existingDirectory(parent)
      if (directory !== null) await syncDirectory(directory)
    })
  }

  /**
   * Gives the batch's directories and the parents of its paths their mode and mtime: last,
   * since writing entries moves a directory's mtime, and deepest first, since a parent's
   * mode may forbid reaching its children.
   */
  private async setDirectoryMetadata(
    parents: ReadonlySet<string>,
    desired: ReadonlyMap<DatasetPath, VersionEntry | null>,
    length: number,
  ): Promise<void> {
    const directories: DirectoryEntry[] = []
    for (const entry of desired.values()) if (entry?.kind === 'directory') directories.push(entry)
    const others = [...parents].filter(
      (parent) => parent !== '' && !desired.has(parent as DatasetPath),
    )
    await forEachBounded(others, MIRROR_LOOKUPS_IN_FLIGHT_MAX, async (parent) => {
      const entry = await this.reader.index.latest(parent as DatasetPath, length)
      if (entry?.kind === 'directory') directories.push(entry)
    })
    const depthOf = (entry: DirectoryEntry): number => entry.path.split('/').length
    const depths = [...new Set(directories.map(depthOf))].sort((a, b) => b - a)
    for (const depth of depths)
      await forEachBounded(
        directories.filter((entry) => depthOf(entry) === depth),
        MIRROR_FILES_IN_FLIGHT_MAX,
        async (entry) => {
          const existing = await this.existingDirectory(entry.path)
          if (existing !== null) await setMetadata(existing, entry.mode, entry.mtimeMs)
        },
      )
  }

  /**
   * Makes a directory or a link, or the directory a file goes in: returns the file with its
   * real parent directory, for the caller to write. `directories` keeps the directories
   * made or found in this batch (real paths by dataset path), so each is looked at once.
   */
  private async prepare(
    entry: LiveEntry,
    directories: Map<string, string>,
  ): Promise<{ entry: FileEntry; directory: string } | null> {
    const ensure = async (path: string): Promise<string> => {
      const known = directories.get(path)
      if (known !== undefined) return known
      const directory = await ensureDirectory(this.directory, path, 'replace')
      directories.set(path, directory)
      return directory
    }
    if (entry.kind === 'directory') {
      await ensure(entry.path)
      return null
    }
    const directory = await ensure(parentPath(entry.path) ?? '')
    if (entry.kind === 'file') return { entry, directory }
    const name = baseName(entry.path)
    if ((await lstatOrNull(join(directory, name)))?.isDirectory() === true)
      await rm(join(directory, name), { recursive: true, force: true })
    await replaceWithSymlink(directory, name, entry.target)
    return null
  }

  /**
   * Patches the mirror's copy of a big file in place when it holds the version before this
   * batch and little of it changed (mirror-patch.ts); false when it must be written whole.
   */
  private async patched(
    entry: FileEntry,
    path: string,
    existing: Stats | null,
    batchStart: number,
  ): Promise<boolean> {
    if (this.chunkStore === null || entry.sizeBytes < PATCH_FILE_BYTES_MIN) return false
    const previous = await this.reader.index.latest(entry.path, batchStart)
    if (previous?.kind !== 'file') return false
    const plan = planPatch(
      existing,
      { entry: previous, chunks: await this.reader.chunkList(previous) },
      { entry, chunks: await this.reader.chunkList(entry) },
    )
    if (plan === null) return false
    await applyPatch(path, plan, this.chunkStore)
    return true
  }

  /** Moves the mirror's copy of `from` to `entry.path` if it holds exactly `entry`'s content. */
  private async moveIfSame(from: DatasetPath, entry: FileEntry): Promise<boolean> {
    const source = await this.existingPath(from)
    if (source === null) return false
    const stats = await lstatOrNull(source)
    if (stats?.isFile() !== true || stats.size !== entry.sizeBytes) return false
    if ((await hashFile(source)) !== entry.fileHash) return false
    const directory = await ensureDirectory(this.directory, parentPath(entry.path) ?? '', 'replace')
    const target = join(directory, baseName(entry.path))
    if ((await lstatOrNull(target))?.isDirectory() === true)
      await rm(target, { recursive: true, force: true })
    await rename(source, target)
    await setMetadata(target, entry.mode, entry.mtimeMs)
    return true
  }

  /** The mirror path of `path` if every directory on the way is a real directory (no links followed). */
  private async existingPath(path: string): Promise<string | null> {
    const parent = await this.existingDirectory(dirname(path) === '.' ? '' : dirname(path))
    if (parent === null) return null
    const absolute = join(parent, basename(path))
    return (await lstatOrNull(absolute)) === null ? null : absolute
  }

  private async existingDirectory(path: string): Promise<string | null> {
    let current = this.directory
    if (path === '') return current
    for (const component of path.split('/')) {
      current = join(current, component)
      if ((await lstatOrNull(current))?.isDirectory() !== true) return null
    }
    return current
  }

  private async saveState(appliedLength: number): Promise<void> {
    const state: MirrorState = {
      formatVersion: MIRROR_STATE_FORMAT_VERSION,
      logKey: this.log.keyHex,
      appliedLength,
    }
    const path = this.statePath
    // A temporary name of this mirror's own: the parent directory may hold other mirrors.
    const temporary = `${path}.tmp`
    const handle = await open(temporary, 'w', 0o600)
    try {
      await handle.writeFile(JSON.stringify(state))
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temporary, path)
    await syncDirectory(dirname(path))
    this.applied = appliedLength
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work)
    this.queue = result.catch(() => undefined)
    return result
  }
}

function statePath(directory: string): string {
  return join(dirname(directory), `.${basename(directory)}.clusterreplica-mirror.json`)
}

/** The saved state, or null when there is none or it cannot be trusted (then the mirror reconciles). */
async function readState(path: string, logKey: string): Promise<MirrorState | null> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    return null
  }
  try {
    const state = JSON.parse(text) as MirrorState
    const valid =
      state.formatVersion === MIRROR_STATE_FORMAT_VERSION &&
      state.logKey === logKey &&
      Number.isSafeInteger(state.appliedLength) &&
      state.appliedLength >= 0
    return valid ? state : null
  } catch {
    return null
  }
}

/** Every path in a mirror directory, links not followed; bounded like a scan. */
async function listTree(root: string): Promise<DatasetPath[]> {
  const paths: DatasetPath[] = []
  const stack = ['']
  while (stack.length > 0) {
    const directory = stack.pop()!
    for (const entry of await readdir(join(root, directory), { withFileTypes: true })) {
      const path = (directory === '' ? entry.name : `${directory}/${entry.name}`) as DatasetPath
      if (paths.length >= SCAN_ENTRIES_MAX)
        throw ClusterError.refused(`mirror ${root} has more than ${SCAN_ENTRIES_MAX} entries`)
      paths.push(path)
      if (entry.isDirectory()) stack.push(path)
    }
  }
  return paths
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const piece of createReadStream(path)) hash.update(piece as Buffer)
  return hash.digest('hex')
}

/** Makes renames and removals in a directory durable. */
async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}
