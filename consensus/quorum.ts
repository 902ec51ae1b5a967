// Majorities over the voters of the configuration in effect: the commit index, the lease
// start, and the outcome of an election all come from here.
import type { NodeId } from './types.ts'

export function quorumSize(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1
}

/**
 * The largest value that a quorum of voters has reached: the quorum-th largest of their
 * values. A voter whose value is null counts as below everything; null when fewer than a
 * quorum of voters have a value (and for an empty voter list).
 */
export function quorumValue(
  voters: readonly NodeId[],
  valueOf: (voter: NodeId) => number | null,
): number | null {
  const values: number[] = []
  for (const voter of voters) {
    const value = valueOf(voter)
    if (value !== null) values.push(value)
  }
  const quorum = quorumSize(voters.length)
  if (voters.length === 0 || values.length < quorum) return null
  values.sort((a, b) => b - a)
  return values[quorum - 1]!
}

export type VoteOutcome = 'won' | 'lost' | 'pending'

/** Counts only the answers of voters; once a quorum can no longer be reached the vote is lost. */
export function voteOutcome(
  voters: readonly NodeId[],
  answers: ReadonlyMap<NodeId, boolean>,
): VoteOutcome {
  let granted = 0
  let refused = 0
  for (const voter of voters) {
    const answer = answers.get(voter)
    if (answer === true) granted++
    else if (answer === false) refused++
  }
  const quorum = quorumSize(voters.length)
  if (granted >= quorum) return 'won'
  if (voters.length - refused < quorum) return 'lost'
  return 'pending'
}
