// Ingesting one file: stat it, cut and hash it in one pass while its chunks go to the chunk
// store, stat it again, and only accept the result if nothing moved in between (else read
// again, a bounded number of times, then FILE_UNSTABLE): a version is never a torn file.
// Records are appended only after the chunk store is flushed, so no record in a log ever
// names a chunk that a crash could lose.
import { constants, fstatSync, lstatSync, type BigIntStats } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import type { ChunkStoreApi } from './chunk-types.ts'
import { isLocalChunkStore } from './chunk-store.ts'
import type { HashedChunk } from './chunker.ts'
import { chunkAndHashFile } from './file-chunker.ts'
import type { VersionLogWriter } from './version-log.ts'
import {
  MODE_BITS_MAX,
  fileVersionRecords,
  type DatasetPath,
  type FileVersion,
  type LogSeq,
  type RecordDraft,
} from './version-record.ts'

/** Reads of a file that keeps changing before it is reported FILE_UNSTABLE. */
export const INGEST_TRIES_MAX = 3

/** What identifies a file's state cheaply: when none of it moved, its content is taken as unchanged. */
export interface FileIdentity {
  readonly inode: string
  readonly sizeBytes: number
  readonly mtimeNs: string
  /**
   * Moved by every write, chmod or rename, and unlike the mtime never set back by a tool
   * (`cp -p`, `rsync -t`, `touch -r` over a file of the same size): without it such a
   * rewrite looked unchanged and was never recorded.
   */
  readonly ctimeNs: string
  readonly mode: number
}

export interface IngestedFile {
  readonly version: FileVersion
  readonly identity: FileIdentity
}

// O_NOFOLLOW: a file swapped for a link is not followed. O_NONBLOCK: a file swapped for a
// fifo does not block the open; the fstat after it refuses anything but a regular file.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK

/**
 * Whole milliseconds, rounded: an mtime set from milliseconds comes back a few nanoseconds
 * short (utimes takes floating seconds), and must read as the same millisecond.
 */
export function millisecondsOf(nanoseconds: bigint): number {
  const half = 500_000n
  const rounded =
    nanoseconds >= 0n ? (nanoseconds + half) / 1_000_000n : -((-nanoseconds + half) / 1_000_000n)
  return Number(rounded)
}

export function identityOf(stats: BigIntStats): FileIdentity {
  return {
    inode: stats.ino.toString(),
    sizeBytes: Number(stats.size),
    mtimeNs: stats.mtimeNs.toString(),
    ctimeNs: stats.ctimeNs.toString(),
    mode: Number(stats.mode) & MODE_BITS_MAX,
  }
}

export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return (
    a.inode === b.inode &&
    a.sizeBytes === b.sizeBytes &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs &&
    a.mode === b.mode
  )
}

/** A file that could not be taken as it is: it vanished, could not be read, or kept changing. */
export interface SkippedFile {
  readonly kind: 'skipped'
  readonly problem: ClusterError
}

export type IngestOutcome = ({ readonly kind: 'ingested' } & IngestedFile) | SkippedFile

/** Problems of the file itself: reported, not thrown, so that a scan goes on. */
const FILE_PROBLEMS = ['NOT_FOUND', 'FILE_UNSTABLE', 'IO_ERROR']

/** Wraps a chunk store failure on its way through the chunker: it must not pass for a file problem. */
class ChunkStoreFailure {
  readonly error: unknown
  constructor(error: unknown) {
    this.error = error
  }
}

/**
 * Reads the regular file at `absolutePath` into the chunk store (not flushed) and returns its
 * version, or why it was skipped: NOT_FOUND if it vanished, IO_ERROR if it cannot be read,
 * FILE_UNSTABLE if it kept changing or stopped being a regular file. A failing chunk store
 * (a full disk) is thrown.
 */
export async function ingestFile(options: IngestOptions): Promise<IngestOutcome> {
  try {
    for (let attempt = 1; attempt <= INGEST_TRIES_MAX; attempt++) {
      const ingested = await readOnce(options)
      if (ingested !== null) return { kind: 'ingested', ...ingested }
    }
    throw ClusterError.fileUnstable(
      `${options.path} changed while it was read, ${INGEST_TRIES_MAX} times`,
    )
  } catch (error) {
    if (error instanceof ChunkStoreFailure) throw error.error
    if (isClusterError(error) && FILE_PROBLEMS.includes(error.code))
      return { kind: 'skipped', problem: error }
    throw error
  }
}

interface IngestOptions {
  readonly absolutePath: string
  readonly path: DatasetPath
  readonly chunkStore: ChunkStoreApi
  readonly signal?: AbortSignal
}

/** One read; null when the file moved during it. */
async function readOnce(options: IngestOptions): Promise<IngestedFile | null> {
  const { absolutePath, path, chunkStore } = options
  const handle = await fileCall(path, () => open(absolutePath, OPEN_FLAGS))
  try {
    const before = await fileCall(path, async () => statOpenFile(handle))
    if (!before.isFile()) throw ClusterError.fileUnstable(`${path} is no longer a regular file`)
    const { file: chunked, stored } = await fileCall(path, () =>
      chunkAndHashFile(
        handle,
        {
          sizeHintBytes: Number(before.size),
          ...(options.signal === undefined ? {} : { signal: options.signal }),
        },
        storeChunkIn(chunkStore),
      ),
    )
    // Looked at again once read, while its last chunks are still being stored.
    const [, afterStats, atPath] = await Promise.all([
      stored,
      fileCall(path, async () => statOpenFile(handle)),
      inodeAtPath(absolutePath),
    ])
    const after = identityOf(afterStats)
    if (!sameIdentity(identityOf(before), after) || chunked.sizeBytes !== after.sizeBytes)
      return null
    if (atPath !== after.inode) return null // renamed over meanwhile
    return {
      identity: after,
      version: {
        path,
        sizeBytes: chunked.sizeBytes,
        mode: after.mode,
        mtimeMs: millisecondsOf(before.mtimeNs),
        fileHash: chunked.fileHash,
        chunks: chunked.chunks,
      },
    }
  } finally {
    await handle.close()
  }
}

/**
 * Puts an ingest's chunks: without hashing them again where the store allows it (the
 * chunker has just hashed them). A store failure is wrapped so it cannot pass for a file problem.
 */
function storeChunkIn(chunkStore: ChunkStoreApi): (chunk: HashedChunk) => Promise<unknown> {
  const put = isLocalChunkStore(chunkStore)
    ? (chunk: HashedChunk) => chunkStore.putHashed(chunk)
    : (chunk: HashedChunk) => chunkStore.put(chunk.hash, chunk.bytes)
  return (chunk) =>
    put(chunk).catch((error: unknown) => {
      throw new ChunkStoreFailure(error)
    })
}

/**
 * An open file's inode, looked at without the thread pool: the kernel has it in memory
 * once the file is open, so the call never waits on the disk, and a trip through the pool
 * cost a scan of small files more main-thread time than everything else it did per file.
 */
function statOpenFile(handle: FileHandle): BigIntStats {
  return fstatSync(handle.fd, { bigint: true })
}

/** The inode the path names now, or null when it names nothing. */
async function inodeAtPath(absolutePath: string): Promise<string | null> {
  try {
    // Just opened by this path, so its directory entries are in memory: no thread pool (as above).
    return lstatSync(absolutePath, { bigint: true }).ino.toString()
  } catch {
    return null
  }
}

/** Flushes the chunk store, then appends: records never name chunks a crash could lose. */
export async function appendAfterFlush(
  chunkStore: ChunkStoreApi,
  log: VersionLogWriter,
  drafts: readonly RecordDraft[],
): Promise<{ firstSeq: LogSeq; length: number }> {
  await chunkStore.flush()
  return log.append(drafts)
}

/** Ingests one file and appends its version; returns the seq of its put record. */
export async function recordFile(
  options: IngestOptions & { readonly log: VersionLogWriter },
): Promise<{ seq: LogSeq; version: FileVersion }> {
  const outcome = await ingestFile(options)
  if (outcome.kind === 'skipped') throw outcome.problem
  const { version } = outcome
  const { length } = await appendAfterFlush(
    options.chunkStore,
    options.log,
    fileVersionRecords(version),
  )
  return { seq: (length - 1) as LogSeq, version }
}

/** File system errors become ClusterErrors: NOT_FOUND when the file is gone, IO_ERROR otherwise. */
async function fileCall<T>(path: DatasetPath, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    if (isClusterError(error) || error instanceof ChunkStoreFailure) throw error
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') throw ClusterError.notFound(`${path} vanished`)
    if (code === 'ELOOP' || code === 'ENXIO')
      throw ClusterError.fileUnstable(`${path} is no longer a regular file`)
    throw ClusterError.io(`cannot read ${path}: ${code ?? (error as Error).message}`, error)
  }
}
