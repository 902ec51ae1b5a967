// The topology's public face: the state, its commands, their validation, the Raft state
// machine, the membership plan and the queries the daemon asks.
export {
  NODE_ROLES,
  MASTER_ROLES,
  REPLICA_ROLES,
  EMPTY_TOPOLOGY,
  type NodeRole,
  type TopologyNode,
  type Dataset,
  type DatasetReplica,
  type TopologyState,
} from './topology-state.ts'
export {
  COMMAND_FORMAT_VERSION,
  encodeCommand,
  decodeCommand,
  type TopologyCommand,
  type CommandType,
  type ReplicaRequest,
} from './commands.ts'
export { validateCommand, LOG_CONTEXT, type ValidationContext } from './validate.ts'
export { executeCommand, type CommandOutcome } from './transition.ts'
export { encodeTopology, decodeTopology, TOPOLOGY_FORMAT_VERSION } from './state-codec.ts'
export {
  TopologyMachine,
  type ApplyResult,
  type AppliedListener,
  type RestoredListener,
} from './topology-machine.ts'
export { planMembership, type MembershipPlan } from './membership-plan.ts'
export {
  canCampaign,
  datasetById,
  datasetsMasteredBy,
  datasetsReplicatedBy,
  entitledToDataset,
  isAdmitted,
  nodeByName,
  nodeByPeer,
  nodeWithRole,
} from './queries.ts'
export type { JsonValue } from './json-value.ts'
export * from './limits.ts'
