// Retention on a running node: every dataset this node keeps (as master or replica) gets
// the policy the topology names for it, and the node prunes on a schedule — versions the
// policy drops are marked pruned, and chunks no kept version of any dataset needs are
// dropped so the disk space comes back.
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { NodeId } from '../../consensus/types.ts'
import type { NodeStore } from '../../storage/node-store.ts'
import {
  encodeRetentionPolicy,
  retentionPolicy,
  type RetentionPolicy,
  type RetentionPolicyInput,
} from '../../storage/retention-policy.ts'
import { datasetsMasteredBy, datasetsReplicatedBy, type TopologyState } from '../topology/index.ts'

/** How often a node prunes; a changed policy is applied at the next prune. */
export const PRUNE_INTERVAL_MS = Number(
  process.env['CLUSTERREPLICA_PRUNE_INTERVAL_MS'] ?? 10 * 60_000,
)
/** restic's default: a pack is rewritten once less than half of it is still needed. */
const LIVE_SHARE_THRESHOLD = 0.5

export interface RetentionRunnerOptions {
  readonly self: NodeId
  readonly store: NodeStore
  readonly log: (line: string) => void
}

export class RetentionRunner {
  readonly #options: RetentionRunnerOptions
  #state: TopologyState | null = null
  #timer: NodeJS.Timeout | null = null
  #running: Promise<void> | null = null

  constructor(options: RetentionRunnerOptions) {
    this.#options = options
  }

  start(): void {
    this.#timer = setInterval(() => void this.pruneNow(), PRUNE_INTERVAL_MS)
  }

  update(state: TopologyState): void {
    this.#state = state
  }

  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    await this.#running
  }

  /** Applies the topology's policies and prunes; one prune at a time. */
  pruneNow(): Promise<void> {
    this.#running ??= this.#prune().finally(() => (this.#running = null))
    return this.#running
  }

  async #prune(): Promise<void> {
    const { store, self, log } = this.#options
    const state = this.#state
    if (state === null) return
    const kept = [...datasetsMasteredBy(state, self), ...datasetsReplicatedBy(state, self)]
    if (!kept.some((dataset) => dataset.retention !== null)) return
    try {
      for (const dataset of kept) {
        if (dataset.key === null && dataset.master !== self) continue
        const local =
          dataset.master === self
            ? await store.ownDataset(dataset.id)
            : await store.replicaDataset(dataset.id, Buffer.from(dataset.key!, 'hex'))
        const policy =
          dataset.retention === null
            ? null
            : retentionPolicy(dataset.retention as unknown as RetentionPolicyInput)
        const current = await local.retention()
        if (encoded(current) !== encoded(policy)) await local.setRetention(policy)
      }
      const report = await store.prune({ liveShareThreshold: LIVE_SHARE_THRESHOLD })
      if (report.versionsPruned > 0 || report.bytesFreed > 0) {
        log(
          `retention: ${report.versionsPruned} version(s) pruned, ${report.chunksDropped} chunk(s) dropped, ${report.bytesFreed} bytes freed`,
        )
      }
    } catch (error) {
      if (isClusterError(error, 'CLOSED')) return
      log(`retention: ${(error as Error).message}`)
    }
  }
}

const encoded = (policy: RetentionPolicy | null): string =>
  policy === null ? 'none' : encodeRetentionPolicy(policy)
