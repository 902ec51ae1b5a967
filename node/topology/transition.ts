// The state a valid command leads to. Pure and total over valid commands: validation has
// already been done, so a failed look-up here is a programmer error. Every object it makes
// is new and frozen; the old state is left as it was.
import { assert } from '../../consensus/assert.ts'
import type { ClusterError } from '../../consensus/cluster-error.ts'
import type { TopologyCommand, ReplicaRequest } from './commands.ts'
import { canonicalCopy, type JsonValue } from './json-value.ts'
import { datasetById, nodeByName, nodeByPeer } from './queries.ts'
import {
  NODE_ROLES,
  type Dataset,
  type DatasetReplica,
  type NodeRole,
  type TopologyNode,
  type TopologyState,
} from './topology-state.ts'
import { validateCommand, type ValidationContext } from './validate.ts'

export type CommandOutcome =
  | { readonly ok: true; readonly state: TopologyState }
  | { readonly ok: false; readonly error: ClusterError }

/** Validates, then applies: the state is unchanged unless the outcome is ok. */
export function executeCommand(
  state: TopologyState,
  command: TopologyCommand,
  context: ValidationContext,
): CommandOutcome {
  const error = validateCommand(state, command, context)
  return error === null ? { ok: true, state: transition(state, command) } : { ok: false, error }
}

function transition(state: TopologyState, command: TopologyCommand): TopologyState {
  switch (command.type) {
    case 'createCluster':
      return makeState(command.clusterId, [makeNode({ ...command, roles: ['primary'] })], [])
    case 'admitNode':
      return withNodes(state, [...state.nodes, makeNode(command)])
    case 'setRoles':
      return withNode(state, nodeByName(state, command.name), { roles: command.roles })
    case 'removeNode':
      return withNodes(
        state,
        state.nodes.filter((node) => node.name !== command.name),
      )
    case 'setAddresses':
      return withNode(state, nodeByPeer(state, command.peerId), { addresses: command.addresses })
    case 'addDataset':
      return withDatasets(state, [
        ...state.datasets,
        makeDataset({
          id: command.id,
          master: mustFindNode(state, command.master).peerId,
          path: command.path,
          replicas: resolveReplicas(state, command.replicas),
          key: null,
          retention: null,
        }),
      ])
    case 'removeDataset':
      return withDatasets(
        state,
        state.datasets.filter((dataset) => dataset.id !== command.id),
      )
    case 'setReplicas':
      return withDataset(state, command.id, {
        replicas: resolveReplicas(state, command.replicas),
      })
    case 'setRetention':
      return withDataset(state, command.id, {
        retention: command.policy === null ? null : canonicalCopy(command.policy as JsonValue),
      })
    case 'setDatasetKey':
      return withDataset(state, command.id, { key: command.key })
  }
}

function makeState(
  clusterId: string | null,
  nodes: readonly TopologyNode[],
  datasets: readonly Dataset[],
): TopologyState {
  return Object.freeze({
    clusterId,
    nodes: Object.freeze([...nodes].sort((a, b) => compare(a.name, b.name))),
    datasets: Object.freeze([...datasets].sort((a, b) => compare(a.id, b.id))),
  })
}

const withNodes = (state: TopologyState, nodes: readonly TopologyNode[]): TopologyState =>
  makeState(state.clusterId, nodes, state.datasets)

const withDatasets = (state: TopologyState, datasets: readonly Dataset[]): TopologyState =>
  makeState(state.clusterId, state.nodes, datasets)

function withNode(
  state: TopologyState,
  target: TopologyNode | null,
  change: Partial<Pick<TopologyNode, 'roles' | 'addresses'>>,
): TopologyState {
  assert(target !== null, 'a validated command names a known node')
  return withNodes(
    state,
    state.nodes.map((node) => (node === target ? makeNode({ ...node, ...change }) : node)),
  )
}

function withDataset(
  state: TopologyState,
  id: string,
  change: Partial<Pick<Dataset, 'replicas' | 'key' | 'retention'>>,
): TopologyState {
  const target = datasetById(state, id)
  assert(target !== null, 'a validated command names a known dataset')
  return withDatasets(
    state,
    state.datasets.map((dataset) =>
      dataset === target ? makeDataset({ ...dataset, ...change }) : dataset,
    ),
  )
}

function makeNode(node: {
  peerId: TopologyNode['peerId']
  name: string
  roles: readonly NodeRole[]
  site: string
  addresses: readonly string[]
}): TopologyNode {
  return Object.freeze({
    peerId: node.peerId,
    name: node.name,
    roles: Object.freeze(NODE_ROLES.filter((role) => node.roles.includes(role))),
    site: node.site,
    addresses: Object.freeze([...node.addresses]),
  })
}

function makeDataset(dataset: Dataset): Dataset {
  return Object.freeze({
    id: dataset.id,
    master: dataset.master,
    path: dataset.path,
    replicas: Object.freeze(dataset.replicas.map((replica) => Object.freeze({ ...replica }))),
    key: dataset.key,
    retention: dataset.retention,
  })
}

function resolveReplicas(
  state: TopologyState,
  replicas: readonly ReplicaRequest[],
): DatasetReplica[] {
  return replicas.map((replica) => ({
    node: mustFindNode(state, replica.name).peerId,
    mirror: replica.mirror,
  }))
}

function mustFindNode(state: TopologyState, name: string): TopologyNode {
  const node = nodeByName(state, name)
  assert(node !== null, `a validated command names a known node ('${name}')`)
  return node
}

/** Code-unit order: the same on every node, whatever its locale. */
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)
