// Whether a command may change a topology. The leader runs this before proposing (with a
// context naming itself and the sender), and every node runs it again when the command is
// applied (with LOG_CONTEXT): a command that another one committed first made invalid is
// then refused the same way everywhere, since the answer depends on the state alone.
import { ClusterError } from '../../consensus/cluster-error.ts'
import type { NodeId } from '../../consensus/types.ts'
import { commandShapeProblem, type ReplicaRequest, type TopologyCommand } from './commands.ts'
import { DATASETS_MAX, NODES_MAX } from './limits.ts'
import {
  datasetById,
  datasetsMasteredBy,
  datasetsReplicatedBy,
  hasAnyRole,
  nodeByName,
  nodeByPeer,
  nodeWithRole,
  datasetNames,
} from './queries.ts'
import {
  MASTER_ROLES,
  REPLICA_ROLES,
  type NodeRole,
  type Dataset,
  type TopologyNode,
  type TopologyState,
} from './topology-state.ts'

export interface ValidationContext {
  /** The active primary: the Raft leader the command is proposed on; null when applying. */
  readonly leader: NodeId | null
  /**
   * The node the command comes from (the leader itself, or the admitted peer that forwarded
   * it), for commands only a node itself may make; null when applying from the log.
   */
  readonly sender: NodeId | null
}

/** Applying trusts that the leader checked who sent a command; the rest is checked again. */
export const LOG_CONTEXT: ValidationContext = Object.freeze({ leader: null, sender: null })

type Check<T extends TopologyCommand['type']> = (
  state: TopologyState,
  command: Extract<TopologyCommand, { type: T }>,
  context: ValidationContext,
) => ClusterError | null

/** Null when `command` may be applied to `state`, else why not (BAD_ARGUMENT, NOT_FOUND or REFUSED). */
export function validateCommand(
  state: TopologyState,
  command: TopologyCommand,
  context: ValidationContext,
): ClusterError | null {
  const shapeProblem = commandShapeProblem(command)
  if (shapeProblem !== null) {
    // A caller's command may be anything at all until its shape is checked.
    const type = (command as { type?: unknown } | null)?.type
    return ClusterError.badArgument(`invalid ${String(type)} command: ${shapeProblem}`)
  }
  if (command.type === 'createCluster') return checkCreateCluster(state, command, context)
  if (state.clusterId === null)
    return ClusterError.refused('there is no cluster yet: create one first')
  switch (command.type) {
    case 'admitNode':
      return checkAdmitNode(state, command, context)
    case 'setRoles':
      return checkSetRoles(state, command, context)
    case 'removeNode':
      return checkRemoveNode(state, command, context)
    case 'setAddresses':
      return checkSetAddresses(state, command, context)
    case 'addDataset':
      return checkAddDataset(state, command, context)
    case 'removeDataset':
      return knownDataset(state, command.id).error
    case 'setReplicas':
      return checkSetReplicas(state, command, context)
    case 'setRetention':
      return knownDataset(state, command.id).error
    case 'setDatasetKey':
      return checkSetDatasetKey(state, command, context)
  }
}

const checkCreateCluster: Check<'createCluster'> = (state) =>
  state.clusterId === null
    ? null
    : ClusterError.refused(`the cluster '${state.clusterId}' already exists`)

const checkAdmitNode: Check<'admitNode'> = (state, command) => {
  if (state.nodes.length >= NODES_MAX)
    return ClusterError.refused(`the cluster already has ${NODES_MAX} nodes, the most it can hold`)
  const sameName = nodeByName(state, command.name)
  if (sameName !== null)
    return ClusterError.refused(`the name '${command.name}' is taken by peer ${sameName.peerId}`)
  const samePeer = nodeByPeer(state, command.peerId)
  if (samePeer !== null)
    return ClusterError.refused(`peer ${command.peerId} is already admitted as '${samePeer.name}'`)
  return exclusiveRolesProblem(state, command.name, command.roles)
}

const checkSetRoles: Check<'setRoles'> = (state, command, context) => {
  const found = knownNode(state, command.name)
  if (found.node === null) return found.error
  const { node } = found
  const roles = command.roles
  const exclusive = exclusiveRolesProblem(state, node.name, roles)
  if (exclusive !== null) return exclusive
  if (node.roles.includes('primary') && !roles.includes('primary'))
    return ClusterError.refused(
      `'${node.name}' cannot give up the primary role: a cluster has exactly one primary`,
    )
  const campaignRoles = node.roles.filter((role) => role === 'primary' || role === 'secondary')
  if (node.peerId === context.leader && !campaignRoles.every((role) => roles.includes(role)))
    return ClusterError.refused(`'${node.name}' is the active primary and cannot be demoted`)
  const mastered = datasetsMasteredBy(state, node.peerId)
  if (mastered.length > 0 && !roles.some((role) => MASTER_ROLES.includes(role)))
    return ClusterError.refused(
      `'${node.name}' masters ${datasetNames(mastered)} and must keep the role primary or repli-master`,
    )
  const replicated = datasetsReplicatedBy(state, node.peerId)
  if (replicated.length > 0 && !roles.some((role) => REPLICA_ROLES.includes(role)))
    return ClusterError.refused(
      `'${node.name}' replicates ${datasetNames(replicated)} and must keep the role replica, secondary or repli-master`,
    )
  return null
}

const checkRemoveNode: Check<'removeNode'> = (state, command, context) => {
  const found = knownNode(state, command.name)
  if (found.node === null) return found.error
  const { node } = found
  if (node.peerId === context.leader)
    return ClusterError.refused(`'${node.name}' is the active primary and cannot be removed`)
  if (node.roles.includes('primary'))
    return ClusterError.refused(
      `'${node.name}' is the primary and cannot be removed: a cluster has exactly one primary`,
    )
  const mastered = datasetsMasteredBy(state, node.peerId)
  if (mastered.length > 0)
    return ClusterError.refused(
      `'${node.name}' masters ${datasetNames(mastered)}: remove those datasets first`,
    )
  const replicated = datasetsReplicatedBy(state, node.peerId)
  if (replicated.length > 0)
    return ClusterError.refused(
      `'${node.name}' replicates ${datasetNames(replicated)}: take it off their replicas first`,
    )
  return null
}

const checkSetAddresses: Check<'setAddresses'> = (state, command, context) => {
  const node = nodeByPeer(state, command.peerId)
  if (node === null) return ClusterError.notFound(`peer ${command.peerId} is not admitted`)
  if (context.sender !== null && context.sender !== command.peerId)
    return ClusterError.refused(
      `peer ${context.sender} cannot announce addresses for '${node.name}': only a node itself may`,
    )
  return null
}

const checkAddDataset: Check<'addDataset'> = (state, command) => {
  if (state.datasets.length >= DATASETS_MAX)
    return ClusterError.refused(
      `the cluster already has ${DATASETS_MAX} datasets, the most it can hold`,
    )
  if (datasetById(state, command.id) !== null)
    return ClusterError.refused(`dataset '${command.id}' already exists`)
  return placementProblem(state, command.id, command.master, command.path, command.replicas)
}

const checkSetReplicas: Check<'setReplicas'> = (state, command) => {
  const found = knownDataset(state, command.id)
  if (found.dataset === null) return found.error
  const master = nodeByPeer(state, found.dataset.master)
  if (master === null) return ClusterError.notFound(`the master of dataset '${command.id}' is gone`)
  return placementProblem(state, command.id, master.name, found.dataset.path, command.replicas)
}

const checkSetDatasetKey: Check<'setDatasetKey'> = (state, command, context) => {
  const found = knownDataset(state, command.id)
  if (found.dataset === null) return found.error
  const { dataset } = found
  if (command.by !== dataset.master) {
    const master = nodeByPeer(state, dataset.master)
    return ClusterError.refused(
      `only the master '${master?.name ?? dataset.master}' may announce the key of dataset '${dataset.id}'`,
    )
  }
  if (context.sender !== null && context.sender !== command.by)
    return ClusterError.refused(
      `peer ${context.sender} cannot announce a key on behalf of ${command.by}`,
    )
  if (dataset.key !== null && dataset.key !== command.key)
    return ClusterError.refused(
      `dataset '${dataset.id}' already has its log core key, and a dataset's key never changes`,
    )
  return null
}

/** A node holds primary and secondary never together, and each of them is held by one node at most. */
function exclusiveRolesProblem(
  state: TopologyState,
  name: string,
  roles: readonly NodeRole[],
): ClusterError | null {
  if (roles.includes('primary') && roles.includes('secondary'))
    return ClusterError.badArgument('a node cannot be both the primary and the secondary')
  for (const role of ['primary', 'secondary'] as const) {
    const holder = nodeWithRole(state, role)
    if (roles.includes(role) && holder !== null && holder.name !== name)
      return ClusterError.refused(
        `'${holder.name}' is already the ${role}; a cluster has ${role === 'primary' ? 'exactly' : 'at most'} one`,
      )
  }
  return null
}

/** Where a dataset lives: its master, its replicas and the directories they claim on each node. */
function placementProblem(
  state: TopologyState,
  datasetId: string,
  masterName: string,
  path: string,
  replicas: readonly ReplicaRequest[],
): ClusterError | null {
  const found = knownNode(state, masterName)
  if (found.node === null) return found.error
  const master = found.node
  if (!hasAnyRole(master, MASTER_ROLES))
    return ClusterError.refused(
      `'${master.name}' cannot master dataset '${datasetId}': it is neither primary nor repli-master`,
    )
  const claims: DirectoryClaim[] = [{ node: master.peerId, path, datasetId, kind: 'source' }]
  const seen = new Set<string>()
  for (const replica of replicas) {
    if (replica.name === masterName)
      return ClusterError.badArgument(
        `'${replica.name}' masters dataset '${datasetId}' and cannot also be its replica`,
      )
    if (seen.has(replica.name))
      return ClusterError.badArgument(`replica '${replica.name}' is listed twice`)
    seen.add(replica.name)
    const replicaFound = knownNode(state, replica.name)
    if (replicaFound.node === null) return replicaFound.error
    if (!hasAnyRole(replicaFound.node, REPLICA_ROLES))
      return ClusterError.refused(
        `'${replica.name}' cannot replicate dataset '${datasetId}': it is not a replica, secondary or repli-master`,
      )
    if (replica.mirror !== null)
      claims.push({
        node: replicaFound.node.peerId,
        path: replica.mirror,
        datasetId,
        kind: 'mirror',
      })
  }
  return overlapProblem(state, claims)
}

/** A directory a dataset uses on one node: its source on the master, a mirror on a replica. */
interface DirectoryClaim {
  readonly node: NodeId
  readonly path: string
  readonly datasetId: string
  readonly kind: 'source' | 'mirror'
}

const NO_CLAIMS: readonly DirectoryClaim[] = []

/**
 * Two datasets never share a directory on one node, nor nest one in the other: a mirror
 * inside a watched source would replicate itself in a loop, and a source inside a mirror
 * would be overwritten by it. `claims` are one dataset's; every other dataset's are checked
 * (without building them: this runs for each dataset when a snapshot is restored).
 */
function overlapProblem(
  state: TopologyState,
  claims: readonly DirectoryClaim[],
): ClusterError | null {
  const byNode = new Map<NodeId, DirectoryClaim[]>()
  for (const claim of claims) byNode.set(claim.node, [...(byNode.get(claim.node) ?? []), claim])
  const conflict = (
    node: NodeId,
    path: string,
    dataset: Dataset,
    kind: DirectoryClaim['kind'],
  ): ClusterError | null => {
    for (const claim of byNode.get(node) ?? NO_CLAIMS) {
      const relation = pathRelation(claim.path, path)
      if (relation !== null)
        return ClusterError.refused(
          `on '${nodeByPeer(state, node)?.name ?? node}', ${describeClaim(claim)} ${relation} ${describeClaim({ node, path, datasetId: dataset.id, kind })}`,
        )
    }
    return null
  }
  for (const dataset of state.datasets) {
    if (dataset.id === claims[0]?.datasetId) continue
    const problem = conflict(dataset.master, dataset.path, dataset, 'source')
    if (problem !== null) return problem
    for (const replica of dataset.replicas) {
      const mirrorProblem =
        replica.mirror === null ? null : conflict(replica.node, replica.mirror, dataset, 'mirror')
      if (mirrorProblem !== null) return mirrorProblem
    }
  }
  return null
}

const describeClaim = (claim: DirectoryClaim): string =>
  `the ${claim.kind} of dataset '${claim.datasetId}' (${claim.path})`

function pathRelation(path: string, other: string): string | null {
  if (path === other) return 'is the same directory as'
  if (isInside(path, other)) return 'lies inside'
  if (isInside(other, path)) return 'contains'
  return null
}

/** Whether `path` lies below `directory` (both normalised); builds no string, as it runs often. */
const isInside = (path: string, directory: string): boolean =>
  path.length > directory.length && path[directory.length] === '/' && path.startsWith(directory)

function knownNode(
  state: TopologyState,
  name: string,
): { node: TopologyNode; error: null } | { node: null; error: ClusterError } {
  const node = nodeByName(state, name)
  return node === null
    ? { node: null, error: ClusterError.notFound(`unknown node '${name}'`) }
    : { node, error: null }
}

function knownDataset(
  state: TopologyState,
  id: string,
):
  | { dataset: NonNullable<ReturnType<typeof datasetById>>; error: null }
  | { dataset: null; error: ClusterError } {
  const dataset = datasetById(state, id)
  return dataset === null
    ? { dataset: null, error: ClusterError.notFound(`unknown dataset '${id}'`) }
    : { dataset, error: null }
}
