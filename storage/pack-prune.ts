// Prune, after restic's: dead chunks leave the index, packs with no live chunk are
// deleted, and packs whose live share fell below the threshold are rewritten (their live
// records copied into new packs) so that their disk space comes back. The order makes a
// kill at any moment safe: copies are synced before one synced index batch points the
// chunks at them and marks the old packs retired, and an old pack is deleted only after
// that batch. A crash before the batch leaves new packs that nothing indexes (deleted on
// open); a crash after it leaves retired packs (deleted on open).
import { ClusterError } from '../consensus/cluster-error.ts'
import type { ChunkHash, PruneOptions, PruneReport } from './chunk-types.ts'
import type { ChunkIndex, PackRecord } from './chunk-index.ts'
import { PackAppender, scanPack } from './pack-file.ts'
import { recordBytes, type RecordLocation } from './pack-format.ts'
import { emptyPackRecord, type PackState } from './pack-recovery.ts'

/** Dead index entries dropped in one batch while the index is walked. */
export const PRUNE_DROP_BATCH_ENTRIES_MAX = 10_000
/** Packs rewritten per index batch: bounds the locations held in memory at once. */
export const PRUNE_PACKS_PER_ROUND_MAX = 16

/** What prune needs from the store; the store holds its write lock throughout. */
export interface PruneContext {
  readonly index: ChunkIndex
  readonly packsDirectory: string
  readonly packSizeBytesMax: number
  readonly packs: Map<number, PackState>
  allocatePackId(): number
  /** Stops appending to the current pack if it is one of these. */
  releasePacks(packIds: ReadonlySet<number>): Promise<void>
  /** Deletes the files of retired packs once no read uses them, then their records. */
  deletePacks(packIds: readonly number[]): Promise<void>
}

interface LiveShare {
  chunkCount: number
  chunkBytes: number
  recordBytes: number
}

export function checkPruneOptions(options: PruneOptions): void {
  const threshold = options.liveShareThreshold
  if (!(threshold >= 0 && threshold <= 1)) {
    throw ClusterError.badArgument(`liveShareThreshold must be within 0 and 1, not ${threshold}`)
  }
}

export async function prunePacks(
  context: PruneContext,
  isLive: (hash: ChunkHash) => boolean,
  options: PruneOptions,
): Promise<PruneReport> {
  const { live, chunksDropped } = await dropDeadChunks(context, isLive)
  const doomed: number[] = []
  const sparse: number[] = []
  for (const [packId, state] of context.packs) {
    const share = live.get(packId)
    if (share === undefined) doomed.push(packId)
    else if (share.recordBytes < options.liveShareThreshold * state.sizeBytes) sparse.push(packId)
  }
  await context.releasePacks(new Set([...doomed, ...sparse]))
  let bytesFreed = await retire(context, doomed, [], new Map())
  let packsRewritten = 0
  for (let first = 0; first < sparse.length; first += PRUNE_PACKS_PER_ROUND_MAX) {
    const round = sparse.slice(first, first + PRUNE_PACKS_PER_ROUND_MAX)
    const rewritten = await rewriteRound(context, round, live)
    packsRewritten += rewritten.packIds.length
    bytesFreed += await retire(context, rewritten.packIds, rewritten.copies, rewritten.newPacks)
  }
  return { packsRewritten, packsDeleted: doomed.length, chunksDropped, bytesFreed }
}

/** Walks the index once: drops dead entries, and sums each pack's live chunks. */
async function dropDeadChunks(
  context: PruneContext,
  isLive: (hash: ChunkHash) => boolean,
): Promise<{ live: Map<number, LiveShare>; chunksDropped: number }> {
  const live = new Map<number, LiveShare>()
  let dead: Buffer[] = []
  let chunksDropped = 0
  for await (const [hash, location] of context.index.chunks()) {
    if (isLive(hash.toString('hex') as ChunkHash)) {
      const share = live.get(location.packId) ?? { chunkCount: 0, chunkBytes: 0, recordBytes: 0 }
      share.chunkCount++
      share.chunkBytes += location.lengthBytes
      share.recordBytes += recordBytes(location)
      live.set(location.packId, share)
      continue
    }
    dead.push(hash)
    chunksDropped++
    if (dead.length >= PRUNE_DROP_BATCH_ENTRIES_MAX) {
      await context.index.write({ deleteChunks: dead }, { sync: false })
      dead = []
    }
  }
  const counted = [...context.packs.values()].map(({ record }) => {
    const share = live.get(record.packId)
    return { ...record, chunkCount: share?.chunkCount ?? 0, chunkBytes: share?.chunkBytes ?? 0 }
  })
  await context.index.write({ deleteChunks: dead, putPacks: counted }, { sync: false })
  for (const record of counted) context.packs.get(record.packId)!.record = record
  return { live, chunksDropped }
}

interface RewrittenRound {
  /** The packs all of whose live chunks were copied. */
  readonly packIds: number[]
  readonly copies: (readonly [Buffer, RecordLocation])[]
  readonly newPacks: Map<number, PackState>
}

/** Copies the live records of some packs into new packs, and syncs those. */
async function rewriteRound(
  context: PruneContext,
  round: readonly number[],
  live: ReadonlyMap<number, LiveShare>,
): Promise<RewrittenRound> {
  const copier = new PackAppender(context.packsDirectory, context.packSizeBytesMax, () =>
    context.allocatePackId(),
  )
  const packIds: number[] = []
  const copies: (readonly [Buffer, RecordLocation])[] = []
  try {
    for (const packId of round) {
      const copied: (readonly [Buffer, RecordLocation])[] = []
      await scanPack(context.packsDirectory, packId, 0, async (record) => {
        const location = await context.index.get(record.hash)
        if (location?.packId !== packId || location.offset !== record.offset) return
        copied.push([Buffer.from(record.hash), await copier.append(record.hash, record.payload)])
      })
      // A live chunk that could not be read back stays where it is, with its whole pack.
      if (copied.length !== live.get(packId)?.chunkCount) continue
      packIds.push(packId)
      copies.push(...copied)
    }
    const synced = await copier.seal()
    const newPacks = new Map<number, PackState>()
    for (const { packId, sizeBytes } of synced) {
      const record = { ...emptyPackRecord(packId), indexedEndBytes: sizeBytes }
      newPacks.set(packId, { record, sizeBytes })
    }
    for (const [, location] of copies) {
      const state = newPacks.get(location.packId)!
      state.record = {
        ...state.record,
        chunkCount: state.record.chunkCount + 1,
        chunkBytes: state.record.chunkBytes + location.lengthBytes,
      }
    }
    return { packIds, copies, newPacks }
  } catch (error) {
    await copier.abandon()
    throw error
  }
}

/**
 * In one synced batch, points the copied chunks at their new packs and marks the old
 * packs retired; then deletes the old packs. Returns the bytes freed.
 */
async function retire(
  context: PruneContext,
  packIds: readonly number[],
  copies: readonly (readonly [Buffer, RecordLocation])[],
  newPacks: ReadonlyMap<number, PackState>,
): Promise<number> {
  if (packIds.length === 0 && newPacks.size === 0) return 0
  const retired: PackRecord[] = packIds.map((packId) => ({
    ...context.packs.get(packId)!.record,
    retired: true,
  }))
  const newRecords = [...newPacks.values()].map((state) => state.record)
  await context.index.write(
    { putChunks: copies, putPacks: [...retired, ...newRecords] },
    { sync: true },
  )
  let bytesFreed = 0
  for (const [packId, state] of newPacks) {
    context.packs.set(packId, state)
    bytesFreed -= state.sizeBytes
  }
  for (const packId of packIds) bytesFreed += context.packs.get(packId)!.sizeBytes
  await context.deletePacks(packIds)
  return bytesFreed
}
