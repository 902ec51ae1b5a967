// What a chunk store does on open to come back from a crash at any moment, before it
// serves anything. Every step is safe to repeat if the process dies during it:
// 1. packs that a prune retired (their chunks live elsewhere now) are deleted;
// 2. records past a pack's indexed end are scanned: whole, valid ones that the index
//    lacks are indexed (a crash between the pack's sync and the index batch), and the
//    first torn or damaged one is cut off together with everything after it: nothing
//    past the indexed end was ever acknowledged by flush();
// 3. a pack the index never heard of whose records are all indexed elsewhere (a prune
//    that died before its index batch) is deleted.
import { readdir, stat, truncate, unlink } from 'node:fs/promises'
import type { ChunkIndex, PackRecord } from './chunk-index.ts'
import { packCall, scanPack, syncDirectory } from './pack-file.ts'
import { packPath, parsePackFileName, type RecordLocation } from './pack-format.ts'

export interface PackState {
  /** What the index holds for the pack (as last written). */
  record: PackRecord
  sizeBytes: number
}

export interface ChunkStoreRecovery {
  readonly chunksReindexed: number
  readonly tornBytesCut: number
  readonly packsRemoved: number
  /** Packs shorter than the index says, or missing: chunks past their end read as CORRUPT_STORE. */
  readonly packsDamaged: readonly number[]
}

export interface RecoveredPacks {
  readonly packs: Map<number, PackState>
  readonly report: ChunkStoreRecovery
  /** The newest pack if new records may go on its end. */
  readonly newestPack: number | null
  readonly nextPackId: number
}

export function emptyPackRecord(packId: number): PackRecord {
  return { packId, indexedEndBytes: 0, chunkCount: 0, chunkBytes: 0, retired: false }
}

export async function recoverPacks(
  index: ChunkIndex,
  packsDirectory: string,
): Promise<RecoveredPacks> {
  const records = new Map((await index.loadPacks()).map((record) => [record.packId, record]))
  const files = await listPackFiles(packsDirectory)
  const nextPackId = Math.max(0, ...files, ...records.keys()) + 1
  const retired = [...records.values()].filter((record) => record.retired)
  await deletePackFiles(
    packsDirectory,
    retired.map((record) => record.packId),
  )
  await index.write({ deletePacks: retired.map((record) => record.packId) }, { sync: false })

  const packs = new Map<number, PackState>()
  const packsDamaged: number[] = []
  const orphans: number[] = []
  let chunksReindexed = 0
  let tornBytesCut = 0
  for (const packId of files) {
    const known = records.get(packId)
    if (known?.retired) continue
    const record = known ?? emptyPackRecord(packId)
    const path = packPath(packsDirectory, packId)
    const { size } = await packCall(path, 'stat', () => stat(path))
    if (size < record.indexedEndBytes) packsDamaged.push(packId)
    if (size <= record.indexedEndBytes) {
      // A pack the index never heard of that is empty was created, then never written.
      if (known === undefined) orphans.push(packId)
      else packs.set(packId, { record, sizeBytes: size })
      continue
    }
    const tail = await scanTail(index, packsDirectory, record)
    if (known === undefined && tail.found.size === 0) {
      orphans.push(packId)
      continue
    }
    if (tail.record.indexedEndBytes < size) {
      await packCall(path, 'truncate', () => truncate(path, tail.record.indexedEndBytes))
      tornBytesCut += size - tail.record.indexedEndBytes
    }
    await index.write({ putChunks: tail.found.values(), putPacks: [tail.record] }, { sync: false })
    chunksReindexed += tail.found.size
    packs.set(packId, { record: tail.record, sizeBytes: tail.record.indexedEndBytes })
  }
  for (const [packId, record] of records) {
    if (!record.retired && !packs.has(packId)) {
      packsDamaged.push(packId)
      packs.set(packId, { record, sizeBytes: 0 })
    }
  }
  await deletePackFiles(packsDirectory, orphans)
  const newest = files.filter((packId) => packs.has(packId)).at(-1)
  return {
    packs,
    report: {
      chunksReindexed,
      tornBytesCut,
      packsRemoved: retired.length + orphans.length,
      packsDamaged,
    },
    newestPack: newest !== undefined && !packsDamaged.includes(newest) ? newest : null,
    nextPackId,
  }
}

/**
 * Finds the whole records past a pack's indexed end that the index lacks, and the
 * pack's record once they are indexed: its indexed end is where its valid records end.
 */
async function scanTail(
  index: ChunkIndex,
  packsDirectory: string,
  record: PackRecord,
): Promise<{ record: PackRecord; found: Map<string, readonly [Buffer, RecordLocation]> }> {
  const found = new Map<string, readonly [Buffer, RecordLocation]>()
  let chunkBytes = record.chunkBytes
  const validEndOffset = await scanPack(
    packsDirectory,
    record.packId,
    record.indexedEndBytes,
    async (scanned) => {
      const name = scanned.hash.toString('hex')
      if (found.has(name) || (await index.get(scanned.hash)) !== undefined) return
      const location = {
        packId: record.packId,
        offset: scanned.offset,
        lengthBytes: scanned.payload.length,
      }
      found.set(name, [Buffer.from(scanned.hash), location])
      chunkBytes += scanned.payload.length
    },
  )
  return {
    record: {
      ...record,
      indexedEndBytes: validEndOffset,
      chunkCount: record.chunkCount + found.size,
      chunkBytes,
    },
    found,
  }
}

async function listPackFiles(packsDirectory: string): Promise<number[]> {
  const names = await packCall(packsDirectory, 'list', () => readdir(packsDirectory))
  return names
    .map(parsePackFileName)
    .filter((packId): packId is number => packId !== null)
    .sort((a, b) => a - b)
}

/** Deletes pack files (a missing one is already deleted), then syncs the directory. */
export async function deletePackFiles(
  packsDirectory: string,
  packIds: readonly number[],
): Promise<void> {
  if (packIds.length === 0) return
  for (const packId of packIds) {
    const path = packPath(packsDirectory, packId)
    await packCall(path, 'delete', () =>
      unlink(path).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error
      }),
    )
  }
  await syncDirectory(packsDirectory)
}
