// Read-only questions about a topology, for validation, the membership plan and the daemon.
// Linear scans: a topology holds at most NODES_MAX nodes and DATASETS_MAX datasets.
import type { NodeId } from '../../consensus/types.ts'
import type { Dataset, NodeRole, TopologyNode, TopologyState } from './topology-state.ts'

export const nodeByName = (state: TopologyState, name: string): TopologyNode | null =>
  state.nodes.find((node) => node.name === name) ?? null

export const nodeByPeer = (state: TopologyState, peerId: NodeId): TopologyNode | null =>
  state.nodes.find((node) => node.peerId === peerId) ?? null

export const datasetById = (state: TopologyState, id: string): Dataset | null =>
  state.datasets.find((dataset) => dataset.id === id) ?? null

export const isAdmitted = (state: TopologyState, peerId: NodeId): boolean =>
  nodeByPeer(state, peerId) !== null

export const hasAnyRole = (node: TopologyNode, roles: readonly NodeRole[]): boolean =>
  node.roles.some((role) => roles.includes(role))

export const nodeWithRole = (state: TopologyState, role: NodeRole): TopologyNode | null =>
  state.nodes.find((node) => node.roles.includes(role)) ?? null

/** Only the primary and the secondary stand for election; other voters only vote. */
export function canCampaign(state: TopologyState, peerId: NodeId): boolean {
  const node = nodeByPeer(state, peerId)
  return node !== null && hasAnyRole(node, ['primary', 'secondary'])
}

export const datasetsMasteredBy = (state: TopologyState, peerId: NodeId): readonly Dataset[] =>
  state.datasets.filter((dataset) => dataset.master === peerId)

export const datasetsReplicatedBy = (state: TopologyState, peerId: NodeId): readonly Dataset[] =>
  state.datasets.filter((dataset) => dataset.replicas.some((replica) => replica.node === peerId))

/** Whether a peer may replicate a dataset's log and chunks: its master and its replicas. */
export function entitledToDataset(
  state: TopologyState,
  peerId: NodeId,
  datasetId: string,
): boolean {
  const dataset = datasetById(state, datasetId)
  if (dataset === null) return false
  return dataset.master === peerId || dataset.replicas.some((replica) => replica.node === peerId)
}

/** "dataset 'a'" or "datasets 'a', 'b'", for messages. */
export const datasetNames = (datasets: readonly Dataset[]): string =>
  `${datasets.length === 1 ? 'dataset' : 'datasets'} ${datasets.map((dataset) => `'${dataset.id}'`).join(', ')}`
