// The cluster's authoritative configuration, as every node holds it after applying the same
// committed commands. It is plain immutable data: each command yields a new state, so a
// listener may keep the state it was handed. Nodes are kept sorted by name and datasets by
// id, so that the state has one form whatever order things were added in.
import type { NodeId } from '../../consensus/types.ts'
import type { JsonValue } from './json-value.ts'

/** In the order a node's roles are always listed. */
export const NODE_ROLES = ['primary', 'secondary', 'repli-master', 'replica'] as const
export type NodeRole = (typeof NODE_ROLES)[number]

/** Roles that may master a dataset, and roles that may receive one. */
export const MASTER_ROLES: readonly NodeRole[] = ['primary', 'repli-master']
export const REPLICA_ROLES: readonly NodeRole[] = ['replica', 'secondary', 'repli-master']

export interface TopologyNode {
  readonly peerId: NodeId
  readonly name: string
  /** Never empty, in NODE_ROLES order. */
  readonly roles: readonly NodeRole[]
  readonly site: string
  /** Where the node listens (multiaddrs), in its order of preference. */
  readonly addresses: readonly string[]
}

export interface DatasetReplica {
  readonly node: NodeId
  /** Where this replica keeps a live mirror of the dataset, or null for the vault only. */
  readonly mirror: string | null
}

export interface Dataset {
  readonly id: string
  readonly master: NodeId
  /** The dataset's directory on the master. */
  readonly path: string
  readonly replicas: readonly DatasetReplica[]
  /** The log core's public key (hex) once the master has announced it. */
  readonly key: string | null
  /** Opaque to the topology (another module reads it), kept in canonical form. */
  readonly retention: JsonValue | null
}

export interface TopologyState {
  /** Null until the cluster is created; everything else is empty until then. */
  readonly clusterId: string | null
  readonly nodes: readonly TopologyNode[]
  readonly datasets: readonly Dataset[]
}

export const EMPTY_TOPOLOGY: TopologyState = Object.freeze({
  clusterId: null,
  nodes: Object.freeze([]),
  datasets: Object.freeze([]),
})
