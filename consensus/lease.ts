// The leader lease, used for fencing: the failover controller stops the Primary's services
// when the lease runs out, and it must run out before any other node can become leader.
//
// Why it is safe. Every append, heartbeat and snapshot carries sentTick, the leader's
// tickCount when it was created, and every response echoes it. A voter that answers such
// a message has, before answering, reset its election clock (electionElapsed = 0) and
// recorded the sender as its leader. From then on, until electionElapsed reaches E again,
// it is "in lease": it ignores every vote and preVote request (no reply, no term change),
// ignores any other message that would move it to a higher term without a leader, and does
// not campaign itself. A node that restarts behaves the same for its first E ticks, since
// before the crash it may have answered a leader. The only way around the promise is a
// transfer-authorised vote request naming that very leader and term, and a leader that
// sends timeoutNow holds no lease for the rest of its term.
//
// So if a quorum Q of voters answered messages the leader sent at tick s or later, no
// other node can gather a quorum of votes (every quorum meets Q) until some voter of Q has
// ticked E times since it received the message, which is after the leader's tick s.
// A voter's E ticks last at least (E - 1) nominal tick periods divided by (1 + d) of real
// time (its first tick may come at once after the message arrived, and its clock may run
// fast by d); the leader's L + 1 ticks after tick s last at most (L + 1) periods divided by
// (1 - d). With L = floor((E - 1)(1 - d) / (1 + d)) - 1 the leader's tick s + L + 1 comes
// before any voter of Q is free to vote: the lease holds while tickCount() <= s + L, the
// value leaseUntilTick() returns.
//
// s itself is the quorum-th largest of the leader's own tickCount (it does not vote for
// anyone else while it leads) and, for each other voter, the largest sentTick it has
// acknowledged in this term.
import { quorumValue } from './quorum.ts'
import type { NodeId } from './types.ts'

/** L, the length of a lease in the leader's ticks, for E = electionTicks and d = clockDriftBound. */
export function leaseTicksFor(options: {
  readonly electionTicks: number
  readonly clockDriftBound: number
}): number {
  const drift = options.clockDriftBound
  return Math.floor(((options.electionTicks - 1) * (1 - drift)) / (1 + drift)) - 1
}

/** The last tick at which the leader's lease holds, or null when no quorum has acknowledged it yet. */
export function leaseUntilTick(input: {
  readonly voters: readonly NodeId[]
  readonly self: NodeId
  readonly selfTick: number
  readonly acknowledgedTickOf: (voter: NodeId) => number | null
  readonly leaseTicks: number
}): number | null {
  const start = quorumValue(input.voters, (voter) =>
    voter === input.self ? input.selfTick : input.acknowledgedTickOf(voter),
  )
  return start === null ? null : start + input.leaseTicks
}
