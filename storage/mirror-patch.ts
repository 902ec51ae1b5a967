// Bringing a big mirrored file to its next version by writing only the chunks that changed.
// A whole rewrite of a 256 MiB file for a 4 KiB edit costs 256 MiB of chunk reads, hashing
// and writes (about a second here), though the version log says exactly which chunks
// differ: content-defined chunks keep their boundaries around an edit, so the two chunk
// lists agree at the same offsets everywhere else.
//
// A patch never changes the visible file: it copies it to a temporary file beside it (a
// reflink where the file system has them, else a copy inside the kernel), writes the changed
// chunks into the copy, syncs it and renames it over the file — like a whole rewrite, so a
// reader sees the old version or the new one, and a crash leaves at most a temporary file
// that the mirror removes when it opens.
import { constants, type Stats } from 'node:fs'
import { copyFile, open, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { ClusterError } from '../consensus/cluster-error.ts'
import type { ChunkHash, ChunkStoreApi } from './chunk-types.ts'
import type { FileEntry } from './version-index.ts'
import type { ChunkReference } from './version-record.ts'
import { temporaryName } from './restore.ts'

/** Smaller files are rewritten whole: that is cheap, and readers never see half of it. */
export const PATCH_FILE_BYTES_MIN = 1024 * 1024
/** Past this share of the file's bytes changed, a whole rewrite is as cheap and atomic. */
export const PATCH_CHANGED_SHARE_MAX = 0.25
/** Two mtimes closer than this are the same: set through floating-point seconds, they come back up to about 1 µs off. */
const MTIME_TOLERANCE_MS = 0.01

export interface ChangedChunk {
  readonly offset: number
  readonly chunk: ChunkReference
}

/** The chunks of `next` that `previous` does not hold at the same offset: what a patch writes. */
export function changedChunks(
  previous: readonly ChunkReference[],
  next: readonly ChunkReference[],
): ChangedChunk[] {
  const previousAt = new Map<number, ChunkHash>()
  let offset = 0
  for (const chunk of previous) {
    previousAt.set(offset, chunk.hash)
    offset += chunk.lengthBytes
  }
  const changed: ChangedChunk[] = []
  offset = 0
  for (const chunk of next) {
    // Equal hashes mean equal bytes, and so equal lengths.
    if (previousAt.get(offset) !== chunk.hash) changed.push({ offset, chunk })
    offset += chunk.lengthBytes
  }
  return changed
}

export interface PatchPlan {
  readonly previous: FileEntry
  readonly next: FileEntry
  readonly changed: readonly ChangedChunk[]
}

/**
 * The patch that takes a mirrored file holding `previous` (by its stats) to `next`, or
 * null when a whole rewrite is due: a small file, a file that is not the previous version
 * (by size and mtime, as rsync trusts them), an unchanged mtime, or too much changed.
 */
export function planPatch(
  stats: Stats | null,
  previous: { entry: FileEntry; chunks: readonly ChunkReference[] },
  next: { entry: FileEntry; chunks: readonly ChunkReference[] },
): PatchPlan | null {
  const before = previous.entry
  const after = next.entry
  if (after.sizeBytes < PATCH_FILE_BYTES_MIN || stats?.isFile() !== true) return null
  if (stats.size !== before.sizeBytes || !sameMtime(stats.mtimeMs, before.mtimeMs)) return null
  // An edit that kept the mtime: the mirror's copy could be either version (trust stops here).
  if (sameMtime(after.mtimeMs, before.mtimeMs)) return null
  const changed = changedChunks(previous.chunks, next.chunks)
  const changedBytes = changed.reduce((sum, { chunk }) => sum + chunk.lengthBytes, 0)
  if (changedBytes > after.sizeBytes * PATCH_CHANGED_SHARE_MAX) return null
  return { previous: before, next: after, changed }
}

/** Applies a patch to the file at `path` through a patched copy and a rename; each chunk is read, and verified, by the chunk store. */
export async function applyPatch(
  path: string,
  plan: PatchPlan,
  chunkStore: Pick<ChunkStoreApi, 'get'>,
): Promise<void> {
  const { next } = plan
  const temporary = join(dirname(path), temporaryName())
  try {
    await copyFile(path, temporary, constants.COPYFILE_FICLONE)
    const handle = await open(temporary, 'r+')
    try {
      for (const { offset, chunk } of plan.changed) {
        const bytes = await chunkStore.get(chunk.hash)
        if (bytes.byteLength !== chunk.lengthBytes)
          throw ClusterError.hashMismatch(
            `chunk ${chunk.hash} of ${next.path} has the wrong length`,
          )
        for (let written = 0; written < bytes.byteLength;) {
          const { bytesWritten } = await handle.write(
            bytes,
            written,
            bytes.byteLength - written,
            offset + written,
          )
          written += bytesWritten
        }
      }
      await handle.truncate(next.sizeBytes)
      await handle.chmod(next.mode)
      await handle.utimes(next.mtimeMs / 1000, next.mtimeMs / 1000)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temporary, path)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
}

function sameMtime(a: number, b: number): boolean {
  return Math.abs(a - b) < MTIME_TOLERANCE_MS
}
