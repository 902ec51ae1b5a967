// Prune for a whole node: retention marks the versions each dataset's policy drops, then
// the chunk store drops every chunk that no kept version of any dataset on the node needs
// (one store serves them all, so a chunk shared by two datasets stays while either needs
// it) and rewrites packs whose live share fell below the threshold.
//
// Order, for crash safety: the marks are synced before the chunk store removes anything,
// so a kill at any moment leaves versions either whole or marked pruned. Concurrency: the
// write queue of every dataset is held throughout, so no scan is between its chunk puts
// and its append; and puts from anywhere else wait while the live set is taken and used
// (gated-chunk-store.ts).
import { ClusterError } from '../consensus/cluster-error.ts'
import type { ChunkHash, PruneOptions, PruneReport } from './chunk-types.ts'
import type { GatedChunkStore } from './gated-chunk-store.ts'
import type { Dataset } from './node-store.ts'
import { checkPruneOptions } from './pack-prune.ts'
import { applyRetention, type RetentionReport } from './retention.ts'
import type { DatasetId } from './version-record.ts'

/** A JavaScript Set holds at most 2^24 entries; the live set is split across this many. */
const LIVE_SET_SHARDS = 16
export const LIVE_CHUNKS_MAX = LIVE_SET_SHARDS * 2 ** 24

export interface NodePruneReport extends PruneReport {
  /** File versions retention marked pruned in this run, over every dataset. */
  readonly versionsPruned: number
  /** Per dataset: what its retention policy did (null: it has none and keeps everything). */
  readonly datasets: readonly {
    readonly id: DatasetId
    readonly retention: RetentionReport | null
  }[]
}

/**
 * The chunks kept versions need, held compactly: the first hex digit picks a shard and the
 * next thirteen (52 bits, exact in a double) are the entry. Two chunks that share those 56
 * bits count as one, which can only keep a dead chunk, never drop a live one.
 */
export class LiveChunkSet {
  private readonly shards = Array.from({ length: LIVE_SET_SHARDS }, () => new Set<number>())
  private size = 0

  add(hash: ChunkHash): void {
    const shard = this.shardOf(hash)
    const key = keyOf(hash)
    if (shard.has(key)) return
    if (this.size >= LIVE_CHUNKS_MAX || shard.size >= 2 ** 24)
      throw ClusterError.refused(`prune: more than ${LIVE_CHUNKS_MAX} live chunks`)
    shard.add(key)
    this.size++
  }

  has(hash: ChunkHash): boolean {
    return this.shardOf(hash).has(keyOf(hash))
  }

  private shardOf(hash: ChunkHash): Set<number> {
    return this.shards[Number.parseInt(hash[0]!, 16)]!
  }
}

function keyOf(hash: ChunkHash): number {
  return Number.parseInt(hash.slice(1, 14), 16)
}

/** Prunes `datasets` (every dataset of the node) and the chunk store they share. */
export async function pruneNode(
  datasets: readonly Dataset[],
  chunkStore: GatedChunkStore,
  options: PruneOptions & { readonly nowMs: number },
): Promise<NodePruneReport> {
  checkPruneOptions(options)
  return holdingWrites(datasets, async () => {
    const reports: { id: DatasetId; retention: RetentionReport | null }[] = []
    for (const dataset of datasets) {
      const policy = await dataset.retention()
      const retention =
        policy === null ? null : await applyRetention(dataset.index, policy, options.nowMs)
      reports.push({ id: dataset.id, retention })
    }
    const chunks = await chunkStore.pruneWithLiveSet(async () => {
      const live = new LiveChunkSet()
      for (const dataset of datasets) {
        await dataset.refresh()
        for await (const hash of dataset.reader.referencedChunks()) live.add(hash)
      }
      return (hash) => live.has(hash)
    }, options)
    let versionsPruned = 0
    for (const { retention } of reports) versionsPruned += retention?.versionsPruned ?? 0
    return { ...chunks, versionsPruned, datasets: reports }
  })
}

/** Runs `work` while every dataset's write queue is held (each after its queued writes). */
function holdingWrites<T>(
  datasets: readonly Dataset[],
  work: () => Promise<T>,
  from = 0,
): Promise<T> {
  const dataset = datasets[from]
  if (dataset === undefined) return work()
  return dataset.holdingWrites(() => holdingWrites(datasets, work, from + 1))
}
