// What a master records for a new version of a big file that it has recorded before: a patch
// against the previous version's base put when the change is small, a whole put otherwise.
// Chunks are content-defined, so a local change in a file changes a chunk or two and the
// lists agree again right after it: aligning the two lists on chunk hashes finds each
// changed region as one short edit.
import {
  PATCH_CHUNKS_MAX,
  PATCH_EDITS_MAX,
  fileVersionRecords,
  type ChunkListEdit,
  type ChunkReference,
  type FileVersion,
  type RecordDraft,
} from './version-record.ts'
import type { PatchBase } from './version-content.ts'

/** A patch is made only against a base of at least this many chunks (about 2 MiB and up). */
export const PATCH_BASE_CHUNKS_MIN = 32
/**
 * A patch is recorded only while it is at most this share of the whole list it stands for
 * (counted in chunk references; each edit counts as one more): past it, a whole put starts
 * a new base, so patches stay small and readers never apply long ones.
 */
export const PATCH_SHARE_MAX = 0.25

/** The records for a new file version: one patch against `base` when that is worth it, else a whole put. */
export function fileVersionDrafts(version: FileVersion, base: PatchBase | null): RecordDraft[] {
  if (base !== null && base.chunks.length >= PATCH_BASE_CHUNKS_MIN) {
    const edits = diffChunkLists(base.chunks, version.chunks)
    if (edits.length > 0 && isWorthPatching(edits, version.chunks.length)) {
      const { path, sizeBytes, mode, mtimeMs, fileHash } = version
      return [{ kind: 'patch', path, sizeBytes, mode, mtimeMs, fileHash, baseSeq: base.seq, edits }]
    }
  }
  return fileVersionRecords(version)
}

function isWorthPatching(edits: readonly ChunkListEdit[], chunkCount: number): boolean {
  let inserted = 0
  for (const edit of edits) inserted += edit.insert.length
  return (
    edits.length <= PATCH_EDITS_MAX &&
    inserted <= PATCH_CHUNKS_MAX &&
    inserted + edits.length <= chunkCount * PATCH_SHARE_MAX
  )
}

/**
 * Edits that turn `base` into `next`. Walks both lists; where they differ, the edit runs to
 * the first chunk of `next` that `base` holds at or after the current place (the nearest
 * such place in `base`), where the lists agree again. Linear in the lengths for local changes.
 */
export function diffChunkLists(
  base: readonly ChunkReference[],
  next: readonly ChunkReference[],
): ChunkListEdit[] {
  const positions = new Map<string, number[]>()
  base.forEach((chunk, index) => {
    const list = positions.get(chunk.hash)
    if (list === undefined) positions.set(chunk.hash, [index])
    else list.push(index)
  })
  const edits: ChunkListEdit[] = []
  let baseIndex = 0
  let nextIndex = 0
  while (nextIndex < next.length) {
    if (baseIndex < base.length && base[baseIndex]!.hash === next[nextIndex]!.hash) {
      baseIndex++
      nextIndex++
      continue
    }
    let syncNext = nextIndex
    let syncBase = base.length
    for (; syncNext < next.length; syncNext++) {
      const found = firstAtOrAfter(positions.get(next[syncNext]!.hash), baseIndex)
      if (found !== null) {
        syncBase = found
        break
      }
    }
    edits.push({
      at: baseIndex,
      removeCount: syncBase - baseIndex,
      insert: next.slice(nextIndex, syncNext),
    })
    baseIndex = syncBase
    nextIndex = syncNext
  }
  if (baseIndex < base.length)
    edits.push({ at: baseIndex, removeCount: base.length - baseIndex, insert: [] })
  return edits
}

/** The first of the ascending `indexes` at or after `from`, or null. */
function firstAtOrAfter(indexes: readonly number[] | undefined, from: number): number | null {
  if (indexes === undefined) return null
  let low = 0
  let high = indexes.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (indexes[middle]! < from) low = middle + 1
    else high = middle
  }
  return low < indexes.length ? indexes[low]! : null
}
