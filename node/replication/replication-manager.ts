// Turns the applied topology into running replication: a MasterDataset for every dataset
// this node masters, a ReplicaDataset for every dataset it replicates (once the master has
// announced the log's key). It works from the last applied topology only, so replication
// carries on while Raft has no leader.
import type Hypercore from 'hypercore'
import type { NodeId } from '../../consensus/types.ts'
import type { NodeStore } from '../../storage/node-store.ts'
import type { Dataset as TopologyDataset, TopologyState } from '../topology/index.ts'
import { datasetsMasteredBy, datasetsReplicatedBy } from '../topology/index.ts'
import type { LogReplication } from '../wire/log-replication.ts'
import { MasterDataset } from './master-dataset.ts'
import { ReplicaDataset, type ReplicaProgress } from './replica-dataset.ts'
import type { ChunkFetch } from './replica-sync.ts'

export interface DatasetProgress {
  readonly id: string
  readonly role: 'master' | 'replica'
  readonly logLength: number
  /** Records held with all their chunks (the master holds everything it recorded). */
  readonly completeLength: number
  readonly bytesPending: number
  /** Chunk bytes this process fetched for the dataset since it started (a restarted replica fetches only what it lacks). */
  readonly bytesFetched: number
  /** Records applied to the live mirror, or null when this node keeps none for the dataset. */
  readonly mirroredLength: number | null
}

export interface ReplicationManagerOptions {
  readonly self: NodeId
  readonly store: NodeStore
  readonly logReplication: LogReplication
  readonly fetcher: ChunkFetch
  /** The master announces its log's key through the topology (via the leader). */
  readonly announceKey: (datasetId: string, keyHex: string) => Promise<void>
  readonly log: (line: string) => void
}

interface RunningReplica {
  readonly key: string
  readonly mirror: string | null
  readonly replica: ReplicaDataset
}

export class ReplicationManager {
  readonly #options: ReplicationManagerOptions
  readonly #masters = new Map<string, MasterDataset>()
  readonly #replicas = new Map<string, RunningReplica>()
  #state: TopologyState | null = null
  /** Topology updates are applied one after another, never interleaved. */
  #updating: Promise<void> = Promise.resolve()
  #stopped = false

  constructor(options: ReplicationManagerOptions) {
    this.#options = options
  }

  /** Called with every applied topology; the work is queued behind earlier updates. */
  update(state: TopologyState): Promise<void> {
    this.#state = state
    this.#updating = this.#updating
      .then(() => this.#reconcile())
      .catch((error: unknown) => {
        this.#options.log(`replication: ${(error as Error).message}`)
      })
    return this.#updating
  }

  /** This node's copy of a dataset's log core, for peers that replicate it; null if it keeps none. */
  core(id: string): Hypercore | null {
    return this.#masters.get(id)?.core ?? this.#replicas.get(id)?.replica.core ?? null
  }

  /** The running master of a dataset, for tests and the benchmark (scan idleness). */
  master(id: string): MasterDataset | null {
    return this.#masters.get(id) ?? null
  }

  progress(): DatasetProgress[] {
    const result: DatasetProgress[] = []
    for (const master of this.#masters.values()) {
      const length = master.logLength
      result.push({
        id: master.id,
        role: 'master',
        logLength: length,
        completeLength: length,
        bytesPending: 0,
        bytesFetched: 0,
        mirroredLength: null,
      })
    }
    for (const { replica } of this.#replicas.values()) {
      const progress: ReplicaProgress = replica.progress()
      result.push({ id: replica.id, role: 'replica', ...progress })
    }
    return result.sort((a, b) => a.id.localeCompare(b.id))
  }

  async stop(): Promise<void> {
    this.#stopped = true
    await this.#updating
    await Promise.all([...this.#masters.values()].map((master) => master.stop()))
    await Promise.all([...this.#replicas.values()].map(({ replica }) => replica.stop()))
    this.#masters.clear()
    this.#replicas.clear()
  }

  async #reconcile(): Promise<void> {
    const state = this.#state
    if (state === null || this.#stopped) return
    const { self } = this.#options
    const mastered = new Map(
      datasetsMasteredBy(state, self).map((dataset) => [dataset.id, dataset]),
    )
    for (const [id, master] of this.#masters) {
      if (mastered.get(id)?.path === master.directory) continue
      this.#masters.delete(id)
      await master.stop()
    }
    for (const dataset of mastered.values()) {
      if (!this.#masters.has(dataset.id)) await this.#startMaster(dataset)
      else if (dataset.key === null)
        this.#announce(dataset.id, this.#masters.get(dataset.id)!.keyHex)
    }
    const replicated = new Map(
      datasetsReplicatedBy(state, self)
        .filter((dataset) => dataset.key !== null)
        .map((dataset) => [dataset.id, dataset]),
    )
    for (const [id, running] of this.#replicas) {
      const dataset = replicated.get(id)
      if (dataset?.key === running.key && mirrorOf(dataset, self) === running.mirror) continue
      this.#replicas.delete(id)
      await running.replica.stop()
    }
    for (const dataset of replicated.values()) {
      if (!this.#replicas.has(dataset.id)) await this.#startReplica(dataset)
    }
  }

  async #startMaster(dataset: TopologyDataset): Promise<void> {
    const { store, log } = this.#options
    const own = await store.ownDataset(dataset.id)
    const master = new MasterDataset({ dataset: own, directory: dataset.path, log })
    this.#masters.set(dataset.id, master)
    await master.start()
    if (dataset.key !== own.log.keyHex) this.#announce(dataset.id, own.log.keyHex)
  }

  #announce(datasetId: string, keyHex: string): void {
    this.#options.announceKey(datasetId, keyHex).catch((error: unknown) => {
      this.#options.log(
        `dataset ${datasetId}: cannot announce its log key yet: ${(error as Error).message}`,
      )
    })
  }

  async #startReplica(dataset: TopologyDataset): Promise<void> {
    const { store, self, log, fetcher, logReplication } = this.#options
    const key = dataset.key!
    const own = await store.replicaDataset(dataset.id, Buffer.from(key, 'hex'))
    const mirror = mirrorOf(dataset, self)
    const others = (): string[] => {
      const current =
        this.#state === null
          ? dataset
          : (this.#state.datasets.find((d) => d.id === dataset.id) ?? dataset)
      return current.replicas.map((replica) => replica.node).filter((peer) => peer !== self)
    }
    const replica = new ReplicaDataset({
      dataset: own,
      chunkStore: store.chunkStore,
      fetcher,
      logReplication,
      chunkSources: () => [dataset.master, ...others()],
      // The master never opens sessions; between two replicas the one with the smaller id does.
      sessionPeers: () => [dataset.master, ...others().filter((peer) => peer > self)],
      mirrorDirectory: mirror,
      log,
    })
    this.#replicas.set(dataset.id, { key, mirror, replica })
    await replica.start()
  }
}

function mirrorOf(dataset: TopologyDataset, self: NodeId): string | null {
  return dataset.replicas.find((replica) => replica.node === self)?.mirror ?? null
}
