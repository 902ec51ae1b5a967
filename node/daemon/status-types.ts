// What `status`, `dataset ls`, `versions` and `pending` answer: shared by the daemon that
// builds these reports and the command line that prints them.

export interface NodeStatus {
  readonly name: string
  readonly peerId: string
  readonly addresses: readonly string[]
  readonly roles: readonly string[]
  readonly site: string
  /** Whether this node could ask it for its status just now. */
  readonly reachable: boolean
  readonly raftRole: string | null
  readonly term: number | null
}

export interface ReplicaLag {
  readonly dataset: string
  readonly replica: string
  readonly mirror: string | null
  /** Records in the master's log, and how many of them the replica holds completely (chunks included). */
  readonly masterLength: number | null
  readonly replicaLength: number | null
  readonly versionsBehind: number | null
  readonly bytesBehind: number | null
  /** Chunk bytes the replica fetched since its process started. */
  readonly bytesFetched: number | null
  /** Records applied to the replica's live mirror (null: no mirror, or no answer). */
  readonly mirroredLength: number | null
}

export interface StatusReport {
  readonly clusterId: string | null
  readonly self: string
  readonly leader: string | null
  readonly term: number
  readonly nodes: readonly NodeStatus[]
  readonly replication: readonly ReplicaLag[]
}

export interface DatasetListing {
  readonly id: string
  readonly master: string
  readonly path: string
  readonly replicas: readonly { readonly name: string; readonly mirror: string | null }[]
  readonly coreKey: string | null
}

export interface VersionListing {
  readonly version: number
  readonly kind: string
  readonly recordedAtMs: number
  readonly size: number | null
  readonly hash: string | null
  readonly pruned: boolean
}

export interface PendingNode {
  readonly name: string
  readonly peerId: string
  readonly site: string
  readonly addresses: readonly string[]
  readonly askedAtMs: number
}
