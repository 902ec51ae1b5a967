// Single-server membership changes (Ongaro's thesis §4.1) and the membership each config
// entry leaves in effect. A config takes effect on a node as soon as its entry is in the
// log; an entry that cannot be decoded or applied leaves the membership unchanged, the
// same way on every node, so that logs which agree give memberships which agree.
import { decodeConfigChange } from './codec.ts'
import { MEMBERSHIP_NODES_MAX } from './limits.ts'
import { nodeIdProblem } from './node-id.ts'
import type { ConfigChange, Entry, Membership, NodeId } from './types.ts'

export const EMPTY_MEMBERSHIP: Membership = { voters: [], learners: [] }

export type ConfigChangeOutcome =
  | { readonly ok: true; readonly membership: Membership }
  | {
      readonly ok: false
      readonly code: 'INVALID_CONFIG_CHANGE' | 'UNKNOWN_NODE'
      readonly reason: string
    }

const invalid = (reason: string): ConfigChangeOutcome => ({
  ok: false,
  code: 'INVALID_CONFIG_CHANGE',
  reason,
})

export const isVoter = (membership: Membership, node: NodeId): boolean =>
  membership.voters.includes(node)

export const isMember = (membership: Membership, node: NodeId): boolean =>
  membership.voters.includes(node) || membership.learners.includes(node)

/** Voters first, then learners, in the order the configuration lists them. */
export const membersOf = (membership: Membership): readonly NodeId[] => [
  ...membership.voters,
  ...membership.learners,
]

export function applyConfigChange(
  membership: Membership,
  change: ConfigChange,
): ConfigChangeOutcome {
  const idProblem = nodeIdProblem(change.node)
  if (idProblem !== null) return invalid(idProblem)
  const { node } = change
  const voters = membership.voters.filter((voter) => voter !== node)
  const learners = membership.learners.filter((learner) => learner !== node)
  const known = isMember(membership, node)
  if (!known && membersOf(membership).length >= MEMBERSHIP_NODES_MAX)
    return invalid(`the membership already has ${MEMBERSHIP_NODES_MAX} nodes`)
  switch (change.type) {
    case 'addVoter':
      if (isVoter(membership, node)) return invalid(`${node} is already a voter`)
      return { ok: true, membership: { voters: [...voters, node], learners } }
    case 'addLearner':
      if (membership.learners.includes(node)) return invalid(`${node} is already a learner`)
      if (voters.length === 0) return invalid(`demoting ${node} would leave no voter`)
      return { ok: true, membership: { voters, learners: [...learners, node] } }
    case 'remove':
      if (!known) return { ok: false, code: 'UNKNOWN_NODE', reason: `${node} is not a member` }
      if (voters.length === 0) return invalid(`removing ${node} would leave no voter`)
      return { ok: true, membership: { voters, learners } }
  }
}

/** The membership after a log entry: only config entries that decode and apply change it. */
export function membershipAfterEntry(membership: Membership, entry: Entry): Membership {
  if (entry.kind !== 'config') return membership
  const decoded = decodeConfigChange(entry.data)
  if (!decoded.ok) return membership
  const outcome = applyConfigChange(membership, decoded.value)
  return outcome.ok ? outcome.membership : membership
}
