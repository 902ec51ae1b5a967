// Queries over one dataset's versions: the versions of a path, a version's bytes as a
// stream (every chunk verified by the chunk store, the whole file against its signed
// hash), the tree at a point (a log length, a time, or a recovery point) and the
// difference between two points. The same code serves a master's own log and a replica's.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import { GET_MANY_CHUNKS_MAX, getEach, isLocalChunkStore } from './chunk-store.ts'
import type { ChunkHash, ChunkStoreApi } from './chunk-types.ts'
import type { FileEntry, LiveEntry, VersionEntry, VersionIndex } from './version-index.ts'
import type { VersionLogReader } from './version-log.ts'
import { versionChunkList } from './version-content.ts'
import type { ChunkReference, DatasetPath, LogSeq } from './version-record.ts'

/** A point in a dataset's history. */
export type Point =
  { readonly length: number } | { readonly timeMs: number } | { readonly recoveryPoint: string }

/** Entries one tree listing returns. */
export const TREE_ENTRIES_MAX = 10_000_000
/** Chunks of a version read together (one index look-up, one read per run of them in a pack). */
export const READ_GROUP_CHUNKS = 32
assert(READ_GROUP_CHUNKS <= GET_MANY_CHUNKS_MAX, 'a group is one getMany()')
/** Groups read ahead of the version's reader, so that reading overlaps its writes. */
export const READ_AHEAD_GROUPS = 2

export type VersionInfo = VersionEntry & { readonly pruned: boolean }

export interface Tree {
  readonly length: number
  readonly entries: readonly LiveEntry[]
}

export interface TreeDiff {
  readonly added: readonly LiveEntry[]
  readonly changed: readonly { readonly before: LiveEntry; readonly after: LiveEntry }[]
  readonly deleted: readonly LiveEntry[]
}

export class DatasetReader {
  readonly index: VersionIndex
  private readonly log: VersionLogReader
  private readonly chunkStore: ChunkStoreApi

  constructor(options: { index: VersionIndex; log: VersionLogReader; chunkStore: ChunkStoreApi }) {
    this.index = options.index
    this.log = options.log
    this.chunkStore = options.chunkStore
  }

  /** The log length a point stands for. */
  async resolve(point: Point): Promise<number> {
    if ('length' in point) {
      if (!(
        Number.isSafeInteger(point.length) &&
        point.length >= 0 &&
        point.length <= this.index.indexedLength
      ))
        throw ClusterError.badArgument(
          `log length ${point.length} is not between 0 and ${this.index.indexedLength}`,
        )
      return point.length
    }
    if ('timeMs' in point) return this.index.lengthAtTime(point.timeMs)
    const recoveryPoint = await this.index.recoveryPoint(point.recoveryPoint)
    if (recoveryPoint === null)
      throw ClusterError.notFound(
        `no recovery point labelled ${JSON.stringify(point.recoveryPoint)}`,
      )
    return recoveryPoint.length
  }

  /** Every version of a path, oldest first, each marked when retention pruned it. */
  async versions(path: DatasetPath): Promise<VersionInfo[]> {
    const versions: VersionInfo[] = []
    for (const entry of await this.index.versionsOf(path))
      versions.push({ ...entry, pruned: await this.index.isPruned(entry.seq) })
    return versions
  }

  /** The file version of `path` made by record `seq`, or current at `point` (default: latest). */
  async fileVersion(
    path: DatasetPath,
    at: { seq: LogSeq } | Point | null = null,
  ): Promise<FileEntry> {
    let entry: VersionEntry | null
    if (at !== null && 'seq' in at)
      entry = (await this.index.versionsOf(path)).find((each) => each.seq === at.seq) ?? null
    else
      entry = await this.index.latest(
        path,
        at === null ? this.index.indexedLength : await this.resolve(at),
      )
    if (entry === null) throw ClusterError.notFound(`no such version of ${path}`)
    if (entry.kind !== 'file')
      throw ClusterError.notFound(`${path} is a ${entry.kind} at that point, not a file`)
    return entry
  }

  /** A file version's bytes. The stream fails with PRUNED, NOT_FOUND, HASH_MISMATCH or CORRUPT_STORE. */
  async open(entry: FileEntry): Promise<Readable> {
    return Readable.from(await this.content(entry), { objectMode: false })
  }

  /** open() without the stream around it: the pieces of a file version, for a caller that writes them. */
  async content(entry: FileEntry): Promise<AsyncIterable<Uint8Array>> {
    if (await this.index.isPruned(entry.seq))
      throw ClusterError.pruned(`version ${entry.seq} of ${entry.path} was pruned`)
    return this.verifiedBytes(entry, await this.chunkList(entry))
  }

  /** The chunk list of a file version, from its put or patch record (and what it needs) in the log. */
  async chunkList(entry: FileEntry): Promise<ChunkReference[]> {
    try {
      return await versionChunkList(entry.contentSeq, (seq) => this.log.read(seq))
    } catch (error) {
      // The index took the record for a whole version: the log disagrees with it now.
      if (isClusterError(error, 'BAD_MESSAGE'))
        throw ClusterError.corruptStore(`version ${entry.seq} of ${entry.path}: ${error.message}`)
      throw error
    }
  }

  /** The live entries at a point, under `under` ('' for the whole dataset). */
  async tree(point: Point, under = ''): Promise<Tree> {
    const length = await this.resolve(point)
    const entries: LiveEntry[] = []
    for await (const entry of this.index.entries(length, under)) {
      if (entries.length >= TREE_ENTRIES_MAX)
        throw ClusterError.refused(`tree has more than ${TREE_ENTRIES_MAX} entries: list a subtree`)
      entries.push(entry)
    }
    return { length, entries }
  }

  /** What changed between two points: entries added, changed (content, kind or metadata) and deleted. */
  async diff(from: Point, to: Point, under = ''): Promise<TreeDiff> {
    const before = (await this.tree(from, under)).entries
    const after = (await this.tree(to, under)).entries
    const beforeByPath = new Map(before.map((entry) => [entry.path, entry]))
    const afterPaths = new Set(after.map((entry) => entry.path))
    const added: LiveEntry[] = []
    const changed: { before: LiveEntry; after: LiveEntry }[] = []
    for (const entry of after) {
      const old = beforeByPath.get(entry.path)
      if (old === undefined) added.push(entry)
      else if (!sameState(old, entry)) changed.push({ before: old, after: entry })
    }
    const deleted = before.filter((entry) => !afterPaths.has(entry.path))
    return { added, changed, deleted }
  }

  /** Every chunk a kept (not pruned) file version needs, possibly repeated: what retention must keep. */
  async *referencedChunks(): AsyncGenerator<ChunkHash> {
    const pruned = await this.index.prunedSeqs()
    const seen = new Set<LogSeq>()
    for await (const entry of this.index.allVersions()) {
      if (entry.kind !== 'file' || pruned.has(entry.seq) || seen.has(entry.contentSeq)) continue
      seen.add(entry.contentSeq)
      for (const chunk of await this.chunkList(entry)) yield chunk.hash
    }
  }

  private async *verifiedBytes(
    entry: FileEntry,
    chunks: readonly ChunkReference[],
  ): AsyncGenerator<Uint8Array> {
    const fileHash = createHash('sha256')
    const groups: Promise<(Uint8Array | ClusterError)[]>[] = []
    let nextGroup = 0
    for (let first = 0; first < chunks.length; first += READ_GROUP_CHUNKS) {
      for (
        ;
        nextGroup < chunks.length && groups.length < READ_AHEAD_GROUPS;
        nextGroup += READ_GROUP_CHUNKS
      ) {
        const group = this.readGroup(chunks.slice(nextGroup, nextGroup + READ_GROUP_CHUNKS))
        group.catch(() => undefined) // awaited below, unless the reader stops first
        groups.push(group)
      }
      const results = await groups.shift()!
      for (const [offset, bytes] of results.entries()) {
        const chunk = chunks[first + offset]!
        if (bytes instanceof ClusterError) throw await this.readFailure(entry, bytes)
        if (bytes.byteLength !== chunk.lengthBytes)
          throw ClusterError.hashMismatch(
            `chunk ${chunk.hash} of ${entry.path} has the wrong length`,
          )
        fileHash.update(bytes)
        yield bytes
      }
    }
    if (fileHash.digest('hex') !== entry.fileHash)
      throw ClusterError.hashMismatch(
        `version ${entry.seq} of ${entry.path} does not match its file hash`,
      )
  }

  private readGroup(group: readonly ChunkReference[]): Promise<(Uint8Array | ClusterError)[]> {
    const hashes = group.map((chunk) => chunk.hash)
    const store = this.chunkStore
    return isLocalChunkStore(store) ? store.getMany(hashes) : getEach(store, hashes)
  }

  /** Retention may prune the version while it is being read: that is PRUNED, not damage. */
  private async readFailure(entry: FileEntry, error: ClusterError): Promise<ClusterError> {
    if (error.code === 'NOT_FOUND' && (await this.index.isPruned(entry.seq)))
      return ClusterError.pruned(`version ${entry.seq} of ${entry.path} was pruned`)
    return error
  }
}

/** Two entries of one path describe the same thing on disk. */
export function sameState(a: LiveEntry, b: LiveEntry): boolean {
  switch (a.kind) {
    case 'file':
      return (
        b.kind === 'file' &&
        a.fileHash === b.fileHash &&
        a.sizeBytes === b.sizeBytes &&
        a.mode === b.mode &&
        a.mtimeMs === b.mtimeMs
      )
    case 'directory':
      return b.kind === 'directory' && a.mode === b.mode && a.mtimeMs === b.mtimeMs
    case 'symlink':
      return b.kind === 'symlink' && a.target === b.target
  }
}
