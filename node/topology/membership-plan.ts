// The Raft membership the topology calls for, and the next single change towards it.
// Voters: the primary and the secondary (the only nodes that campaign), then other admitted
// nodes up to VOTERS_MAX — the current voters first, so that a new node does not unseat one,
// then by name; learners: every other admitted node; nodes no longer admitted leave. The
// leader runs this after each change it sees and proposes the step it returns, one at a time.
import type { ConfigChange, Membership, NodeId } from '../../consensus/types.ts'
import { VOTERS_MAX } from './limits.ts'
import { isAdmitted, nodeByPeer, nodeWithRole } from './queries.ts'
import type { TopologyState } from './topology-state.ts'

export interface MembershipPlan {
  readonly desired: Membership
  /** The next change to propose, or null when there is nothing to do (or nothing safe to do). */
  readonly next: ConfigChange | null
}

/**
 * `leader` is the node running the plan: it is never demoted nor removed, and is kept a
 * voter ahead of other nodes so that its leadership is not what the plan takes away.
 */
export function planMembership(
  state: TopologyState,
  current: Membership,
  leader: NodeId | null,
): MembershipPlan {
  if (state.clusterId === null) return { desired: current, next: null }
  const desired = desiredMembership(state, current, leader)
  return { desired, next: nextChange(state, current, desired, leader) }
}

function desiredMembership(
  state: TopologyState,
  current: Membership,
  leader: NodeId | null,
): Membership {
  const byName = state.nodes.map((node) => node.peerId)
  const candidates = [
    nodeWithRole(state, 'primary')?.peerId,
    nodeWithRole(state, 'secondary')?.peerId,
    leader !== null && isAdmitted(state, leader) ? leader : undefined,
    ...byName.filter((peerId) => current.voters.includes(peerId)),
    ...byName,
  ]
  const voters: NodeId[] = []
  for (const candidate of candidates)
    if (candidate !== undefined && !voters.includes(candidate) && voters.length < VOTERS_MAX)
      voters.push(candidate)
  return { voters, learners: byName.filter((peerId) => !voters.includes(peerId)) }
}

/** Learners first (they catch up before they vote), then promotions and demotions, then removals. */
function nextChange(
  state: TopologyState,
  current: Membership,
  desired: Membership,
  leader: NodeId | null,
): ConfigChange | null {
  const members = [...current.voters, ...current.learners]
  const newcomer = desired.learners
    .concat(desired.voters)
    .filter((peerId) => !members.includes(peerId))
    .sort(byPeerName(state))[0]
  if (newcomer !== undefined) return { type: 'addLearner', node: newcomer }
  const missingVoter = desired.voters.find((peerId) => !current.voters.includes(peerId))
  // Nodes leaving the topology go first, then the rest by name; the leader never goes.
  const demotable = current.voters
    .filter((peerId) => peerId !== leader && !desired.voters.includes(peerId))
    .sort(byPeerName(state))
  const canDemote = demotable.length > 0 && current.voters.length > 1
  if (missingVoter !== undefined && (current.voters.length < VOTERS_MAX || !canDemote))
    return { type: 'addVoter', node: missingVoter }
  if (canDemote) return { type: 'addLearner', node: demotable[0]! }
  const leaving = current.learners
    .filter((peerId) => peerId !== leader && !isAdmitted(state, peerId))
    .sort()[0]
  return leaving === undefined ? null : { type: 'remove', node: leaving }
}

/** Nodes no longer admitted (by id) before admitted ones (by name). */
function byPeerName(state: TopologyState): (a: NodeId, b: NodeId) => number {
  const key = (peerId: NodeId): string => {
    const node = nodeByPeer(state, peerId)
    return node === null ? `0${peerId}` : `1${node.name}`
  }
  return (a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0)
}
