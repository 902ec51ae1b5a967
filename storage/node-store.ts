// A node's data directory: the Corestore with every version log (DIR/cores), the chunk
// store shared by all datasets (DIR/chunks), the index database (DIR/index) and the list
// of every dataset ever opened here (DIR/datasets.json). It hands out datasets by id — the
// node's own (writable log) or another master's (read-only log, by key) — prunes them all
// together, and closes them all.
import { mkdir, rename } from 'node:fs/promises'
import { join } from 'node:path'
import Corestore from 'corestore'
import { ClassicLevel } from 'classic-level'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import type { ChunkHash, ChunkStoreApi, PruneOptions } from './chunk-types.ts'
import { ChunkStore, type ChunkStoreOptions } from './chunk-store.ts'
import { DatasetRegistry } from './dataset-registry.ts'
import { GatedChunkStore } from './gated-chunk-store.ts'
import { DatasetReader, type Point } from './dataset-reader.ts'
import { DatasetScanner, type ScanOptions, type ScanResult } from './dataset-scanner.ts'
import { Mirror } from './mirror.ts'
import { pruneNode, type NodePruneReport } from './node-prune.ts'
import { restore, type RestoreResult } from './restore.ts'
import {
  loadRetentionPolicy,
  saveRetentionPolicy,
  type RetentionPolicy,
} from './retention-policy.ts'
import { SerialQueue } from './store-locks.ts'
import { VersionIndex, type LevelDatabase, type RecoveryPoint } from './version-index.ts'
import { VersionLog } from './version-log.ts'
import { checkLabel, datasetId, type DatasetId } from './version-record.ts'

/** Where a replica keeps how far its copy is complete (every chunk held), in its settings. */
const COMPLETE_LENGTH_KEY = 'completeLength'

export class Dataset {
  readonly id: DatasetId
  readonly log: VersionLog
  readonly index: VersionIndex
  readonly reader: DatasetReader
  private readonly chunkStore: ChunkStoreApi
  private readonly scanState: LevelDatabase
  private readonly settings: LevelDatabase
  private readonly nowMs: () => number
  private readonly complete: CompleteLength
  private queue: Promise<unknown> = Promise.resolve()

  constructor(options: {
    id: DatasetId
    log: VersionLog
    index: VersionIndex
    chunkStore: ChunkStoreApi
    scanState: LevelDatabase
    settings: LevelDatabase
    nowMs: () => number
    complete: CompleteLength
  }) {
    this.id = options.id
    this.complete = options.complete
    this.nowMs = options.nowMs
    this.log = options.log
    this.index = options.index
    this.chunkStore = options.chunkStore
    this.scanState = options.scanState
    this.settings = options.settings
    this.reader = new DatasetReader({
      index: this.index,
      log: this.log,
      chunkStore: this.chunkStore,
    })
  }

  /** Records what changed in `directory` since the last scan (the master's own datasets only). */
  scan(directory: string, options: ScanOptions = {}): Promise<ScanResult> {
    return this.writing(() =>
      new DatasetScanner({
        directory,
        log: this.log,
        index: this.index,
        chunkStore: this.chunkStore,
        scanState: this.scanState,
      }).scan(options),
    )
  }

  /** Marks the current state as a recovery point (at `timeMs`, by default now). */
  addRecoveryPoint(label: string, timeMs?: number): Promise<RecoveryPoint> {
    const problem = checkLabel(label)
    if (problem !== null)
      return Promise.reject(ClusterError.badArgument(`bad recovery point label: ${problem}`))
    const pointMs = Math.floor(timeMs ?? this.nowMs())
    return this.writing(async () => {
      const { firstSeq } = await this.log.append([
        { kind: 'recoveryPoint', label, timeMs: pointMs },
      ])
      await this.index.catchUp()
      return { label, timeMs: pointMs, seq: firstSeq, length: firstSeq + 1 }
    })
  }

  /**
   * On a replica: how many records its copy holds complete, every chunk they name stored
   * durably (0 until its sync says more; null on the master, whose whole log counts). The
   * index, and so every listing, restore and retention decision, goes no further.
   */
  get completeLength(): number | null {
    return this.complete.length
  }

  /** A replica's sync has stored every chunk of the first `length` records durably. */
  async markComplete(length: number): Promise<void> {
    assert(!this.log.writable, 'only a replica tracks how far it is complete')
    assert(
      Number.isSafeInteger(length) && length >= 0 && length <= this.log.length,
      'a length of the log',
    )
    if (this.complete.length !== null && length <= this.complete.length) return
    this.complete.length = length
    // Not synced: a lost write only means the sync looks at those records again.
    await this.settings.put(COMPLETE_LENGTH_KEY, String(length))
  }

  /** Indexes what the log gained (replication, or appends by this node). */
  refresh(): Promise<number> {
    return this.index.catchUp()
  }

  openMirror(directory: string, options: { batchRecordsMax?: number } = {}): Promise<Mirror> {
    return Mirror.open({ reader: this.reader, log: this.log, directory, ...options })
  }

  restore(options: { point: Point; path?: string; destination: string }): Promise<RestoreResult> {
    return restore(this.reader, options)
  }

  /** Sets the retention policy the node's prune applies here (null: keep every version). */
  setRetention(policy: RetentionPolicy | null): Promise<void> {
    return saveRetentionPolicy(this.settings, policy)
  }

  retention(): Promise<RetentionPolicy | null> {
    return loadRetentionPolicy(this.settings, `dataset ${this.id}`)
  }

  /** Runs `work` once the writes queued before it are done; later writes wait for it. */
  holdingWrites<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work)
    this.queue = result.catch(() => undefined)
    return result
  }

  close(): Promise<void> {
    return this.log.close()
  }

  private writing<T>(work: () => Promise<T>): Promise<T> {
    if (!this.log.writable)
      return Promise.reject(ClusterError.refused(`dataset ${this.id} is a replica here`))
    return this.holdingWrites(work)
  }
}

export class NodeStore {
  readonly directory: string
  readonly corestore: Corestore
  readonly chunkStore: GatedChunkStore
  readonly database: ClassicLevel<string, string>
  private readonly registry: DatasetRegistry
  private readonly nowMs: () => number
  private readonly datasets = new Map<DatasetId, Promise<Dataset>>()
  private readonly prunes = new SerialQueue()

  private constructor(
    directory: string,
    stores: {
      corestore: Corestore
      chunkStore: ChunkStoreApi
      database: ClassicLevel<string, string>
      registry: DatasetRegistry
    },
    nowMs: () => number,
  ) {
    this.directory = directory
    this.corestore = stores.corestore
    this.chunkStore = new GatedChunkStore(stores.chunkStore)
    this.database = stores.database
    this.registry = stores.registry
    this.nowMs = nowMs
  }

  static async open(
    directory: string,
    options: { nowMs?: () => number; chunkStore?: ChunkStoreOptions } = {},
  ): Promise<NodeStore> {
    await mkdir(directory, { recursive: true })
    const registry = await DatasetRegistry.open(join(directory, 'datasets.json'))
    const corestore = new Corestore(join(directory, 'cores'))
    await corestore.ready()
    const chunkStore = await ChunkStore.open(join(directory, 'chunks'), options.chunkStore)
    const database = await openIndexDatabase(join(directory, 'index'))
    return new NodeStore(
      directory,
      { corestore, chunkStore, database, registry },
      options.nowMs ?? Date.now,
    )
  }

  /** This node's own dataset: its log is writable here. */
  ownDataset(id: string): Promise<Dataset> {
    return this.dataset(datasetId(id), () =>
      VersionLog.openOwn(this.corestore, datasetId(id), { nowMs: this.nowMs }),
    )
  }

  /** Another master's dataset, read from its log by key as replication fills it. */
  replicaDataset(id: string, key: Uint8Array): Promise<Dataset> {
    return this.dataset(datasetId(id), () => VersionLog.openReplica(this.corestore, key))
  }

  /** Every chunk that a kept version of an open dataset needs (with repeats). */
  async *referencedChunks(): AsyncGenerator<ChunkHash> {
    for (const dataset of this.datasets.values()) yield* (await dataset).reader.referencedChunks()
  }

  /**
   * Applies every dataset's retention policy, then drops the chunks that no kept version
   * of any dataset of this node needs (opening those not open yet), so disk space comes back.
   */
  prune(options: PruneOptions): Promise<NodePruneReport> {
    return this.prunes.run(async () => {
      const datasets: Dataset[] = []
      for (const { id, keyHex, own } of this.registry.list())
        datasets.push(
          await (own ? this.ownDataset(id) : this.replicaDataset(id, Buffer.from(keyHex, 'hex'))),
        )
      return pruneNode(datasets, this.chunkStore, { ...options, nowMs: this.nowMs() })
    })
  }

  async close(): Promise<void> {
    const datasets = await Promise.allSettled(this.datasets.values())
    for (const dataset of datasets) if (dataset.status === 'fulfilled') await dataset.value.close()
    this.datasets.clear()
    await this.corestore.close()
    await this.chunkStore.close()
    await this.database.close()
  }

  private dataset(id: DatasetId, openLog: () => Promise<VersionLog>): Promise<Dataset> {
    const existing = this.datasets.get(id)
    if (existing !== undefined) return existing
    const opening = (async () => {
      const log = await openLog()
      // ClassicLevel is an AbstractLevel; only its hook types' variance defeats the checker.
      const database = this.database as unknown as LevelDatabase
      const sublevel = (name: string): LevelDatabase =>
        database.sublevel(['dataset', id, name]) as unknown as LevelDatabase
      try {
        const settings = sublevel('settings')
        const complete = { length: log.writable ? null : await loadCompleteLength(settings) }
        const index = await VersionIndex.open({
          database,
          datasetId: id,
          log,
          indexableLength: () => complete.length ?? Number.POSITIVE_INFINITY,
        })
        // Registered before first use: prune must count it even if never opened again.
        await this.registry.register({ id, keyHex: log.keyHex, own: log.writable })
        return new Dataset({
          id,
          log,
          index,
          chunkStore: this.chunkStore,
          scanState: sublevel('scan'),
          settings,
          nowMs: this.nowMs,
          complete,
        })
      } catch (error) {
        await log.close().catch(() => undefined)
        throw error
      }
    })()
    this.datasets.set(id, opening)
    opening.catch(() => this.datasets.delete(id))
    return opening
  }
}

interface CompleteLength {
  length: number | null
}

async function loadCompleteLength(settings: LevelDatabase): Promise<number> {
  const text = await settings.get(COMPLETE_LENGTH_KEY)
  const length = Number(text ?? 0)
  // A damaged value is as good as none: the sync looks at the whole log again.
  return Number.isSafeInteger(length) && length >= 0 ? length : 0
}

/**
 * Opens the index database; a damaged one is repaired, and one beyond repair is set aside
 * and started afresh (the index is rebuilt from the logs; pruned marks and scan hints,
 * which are not in the logs, are lost with it).
 */
async function openIndexDatabase(location: string): Promise<ClassicLevel<string, string>> {
  const attempt = async (): Promise<ClassicLevel<string, string>> => {
    const database = new ClassicLevel<string, string>(location)
    await database.open()
    return database
  }
  try {
    return await attempt()
  } catch (error) {
    // Only damage is repaired; a database locked by another process is left alone.
    if ((error as { cause?: { code?: unknown } }).cause?.code !== 'LEVEL_CORRUPTION')
      throw ClusterError.io(
        `cannot open the index database at ${location}: ${(error as Error).message}`,
        error,
      )
  }
  try {
    await ClassicLevel.repair(location)
    return await attempt()
  } catch {
    await rename(location, `${location}.damaged-${Date.now()}`)
    return await attempt()
  }
}
