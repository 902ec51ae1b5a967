// The leader's side of log replication (etcd's bcastAppend / maybeSendAppend /
// handleAppendResponse / maybeCommit): one Progress per other member, appends and
// snapshots sent as each progress allows, the commit index advanced by the quorum's match
// under the rule of the paper's Figure 8, leadership transfer, and the lease. It exists
// only while its node leads, for one term.
import { assert } from './assert.ts'
import { leaseUntilTick } from './lease.ts'
import { isVoter, membersOf } from './membership.ts'
import { Progress } from './progress.ts'
import { quorumValue } from './quorum.ts'
import type { RaftLog } from './raft-log.ts'
import type { RaftOptions } from './raft-options.ts'
import type { LogIndex, Membership, Message, NodeId, Snapshot, Term } from './types.ts'
import { logIndex } from './types.ts'

/** What replication needs from the core it runs in. */
export interface ReplicationHost {
  readonly id: NodeId
  readonly options: RaftOptions
  readonly log: RaftLog
  readonly term: Term
  readonly leaseTicks: number
  tickCount(): number
  latestSnapshot(): Snapshot | null
  send(message: Message): void
}

type AppendResponse = Extract<Message, { type: 'appendResponse' }>
type HeartbeatResponse = Extract<Message, { type: 'heartbeatResponse' }>

export class LeaderReplication {
  readonly #host: ReplicationHost
  /** Every message of this leadership was sent at this tick or later. */
  readonly #startTick: number
  #progress = new Map<NodeId, Progress>()
  #transferTarget: NodeId | null = null
  /** Once timeoutNow went out, another node may win this term's successor election at once. */
  #timeoutNowSent = false

  constructor(host: ReplicationHost) {
    this.#host = host
    this.#startTick = host.tickCount()
    this.syncMembers(false)
  }

  get transferTarget(): NodeId | null {
    return this.#transferTarget
  }

  /**
   * Progress for every member but this node, in membership order. Known followers keep
   * theirs; a new one starts probing at the end of the log, marked active so that a
   * CheckQuorum right after the change does not count it as silent (etcd does the same).
   */
  syncMembers(newMembersActive = true): void {
    const membership = this.#membership()
    const next = logIndex(this.#host.log.lastIndex() + 1)
    const progress = new Map<NodeId, Progress>()
    for (const member of membersOf(membership)) {
      if (member === this.#host.id) continue
      const known = this.#progress.get(member)
      const inflightMax = this.#host.options.maxInflightAppends
      progress.set(member, known ?? new Progress(next, inflightMax, newMembersActive))
    }
    this.#progress = progress
    if (this.#transferTarget !== null && !isVoter(membership, this.#transferTarget))
      this.#transferTarget = null
  }

  broadcastAppend(): void {
    for (const member of this.#progress.keys()) this.sendAppend(member, true)
  }

  broadcastHeartbeat(): void {
    const { log, term, id } = this.#host
    for (const [member, progress] of this.#progress) {
      const commit = logIndex(Math.min(progress.match, log.commitIndex()))
      this.#host.send({
        type: 'heartbeat',
        from: id,
        to: member,
        term,
        commit,
        sentTick: this.#host.tickCount(),
      })
    }
  }

  /** Sends what the follower's progress allows: entries from next, or the snapshot if next was compacted away. */
  sendAppend(member: NodeId, sendIfEmpty: boolean): boolean {
    const progress = this.#progress.get(member)
    if (progress === undefined || progress.isPaused()) return false
    const { log, options } = this.#host
    const prevLogIndex = logIndex(progress.next - 1)
    const prevLogTerm = log.termAt(prevLogIndex)
    if (prevLogTerm === null) return this.#sendSnapshot(member, progress)
    const entries =
      progress.next > log.lastIndex()
        ? []
        : log.entriesFrom(progress.next, options.maxEntriesPerAppend, options.maxBytesPerAppend)
    if (entries.length === 0 && !sendIfEmpty) return false
    this.#host.send({
      type: 'append',
      from: this.#host.id,
      to: member,
      term: this.#host.term,
      prevLogIndex,
      prevLogTerm,
      entries,
      commit: log.commitIndex(),
      sentTick: this.#host.tickCount(),
    })
    progress.sentAppend(logIndex(prevLogIndex + entries.length), entries.length)
    return true
  }

  /** False when the response is invalid (it claims a tick or an index this leader never sent). */
  handleAppendResponse(message: AppendResponse): boolean {
    const progress = this.#progress.get(message.from)
    if (progress === undefined || this.#isStale(message.sentTick)) return true
    if (!this.#acknowledge(progress, message.sentTick)) return false
    if (!message.success) {
      this.#handleRejection(message, progress)
      return true
    }
    if (message.index > this.#host.log.lastIndex()) return false
    const wasPaused = progress.isPaused()
    const moved = progress.maybeUpdate(message.index)
    if (!moved && !(progress.match === message.index && progress.state !== 'replicate')) return true
    if (progress.state === 'probe') progress.becomeReplicate()
    else if (progress.state === 'snapshot') {
      // The follower holds the snapshot (or more): back to streaming entries.
      if (progress.match + 1 >= this.#host.log.firstIndex()) {
        progress.becomeProbe()
        progress.becomeReplicate()
      }
    } else progress.inflights.freeUpTo(message.index)
    if (this.maybeCommit()) this.broadcastAppend()
    else if (wasPaused) this.sendAppend(message.from, true)
    // Fill the inflight window; each append that goes out takes a slot, so this ends.
    for (let sent = 0; sent < this.#host.options.maxInflightAppends; sent++) {
      if (!this.sendAppend(message.from, false)) break
    }
    this.#sendTimeoutNowIfCaughtUp(message.from)
    return true
  }

  handleHeartbeatResponse(message: HeartbeatResponse): boolean {
    const progress = this.#progress.get(message.from)
    if (progress === undefined || this.#isStale(message.sentTick)) return true
    if (!this.#acknowledge(progress, message.sentTick)) return false
    progress.probeSent = false
    // All appends in the window may have been lost: let one more out to find out.
    if (progress.state === 'replicate' && progress.inflights.full()) progress.inflights.freeFirst()
    // A snapshot unanswered after an election timeout is taken as lost.
    const snapshotAgeTicks = this.#host.tickCount() - progress.snapshotSentTick
    if (progress.state === 'snapshot' && snapshotAgeTicks >= this.#host.options.electionTicks)
      progress.becomeProbe()
    if (progress.match < this.#host.log.lastIndex() || progress.state === 'probe')
      this.sendAppend(message.from, true)
    this.#sendTimeoutNowIfCaughtUp(message.from)
    return true
  }

  /** Figure 8: commit the quorum's match only if that entry is of this leader's term. */
  maybeCommit(): boolean {
    const { log, id } = this.#host
    const quorumMatch = quorumValue(this.#membership().voters, (voter) =>
      voter === id ? log.stableIndex() : (this.#progress.get(voter)?.match ?? 0),
    )
    if (quorumMatch === null || quorumMatch <= log.commitIndex()) return false
    // Planted bug 'commitEarlierTermByCounting': commit an earlier term's entry by counting replicas.
    const countsEarlierTerms = this.#host.options.plantedBug === 'commitEarlierTermByCounting'
    if (!countsEarlierTerms && log.termAt(quorumMatch) !== this.#host.term) return false
    log.commitTo(logIndex(quorumMatch))
    return true
  }

  /** CheckQuorum: has a quorum of voters (this node included) been heard from since the last check? */
  checkQuorumActive(): boolean {
    const active = quorumValue(this.#membership().voters, (voter) =>
      voter === this.#host.id || this.#progress.get(voter)?.recentActive === true ? 1 : null,
    )
    for (const progress of this.#progress.values()) progress.recentActive = false
    return active !== null
  }

  startTransfer(target: NodeId): void {
    assert(this.#transferTarget === null, 'one transfer at a time')
    this.#transferTarget = target
    if (!this.#sendTimeoutNowIfCaughtUp(target)) this.sendAppend(target, true)
  }

  leaseUntilTick(): number | null {
    if (this.#timeoutNowSent) return null
    return leaseUntilTick({
      voters: this.#membership().voters,
      self: this.#host.id,
      selfTick: this.#host.tickCount(),
      acknowledgedTickOf: (voter) => this.#progress.get(voter)?.acknowledgedTick ?? null,
      leaseTicks: this.#host.leaseTicks,
    })
  }

  progressView(): ReadonlyMap<NodeId, { readonly match: LogIndex; readonly next: LogIndex }> {
    const { log, id } = this.#host
    const view = new Map<NodeId, { match: LogIndex; next: LogIndex }>()
    if (membersOf(this.#membership()).includes(id))
      view.set(id, { match: log.stableIndex(), next: logIndex(log.lastIndex() + 1) })
    for (const [member, progress] of this.#progress) {
      view.set(member, { match: progress.match, next: progress.next })
    }
    return view
  }

  #membership(): Membership {
    return this.#host.log.membership()
  }

  /**
   * An answer, in this term, to a message this node sent as leader of an earlier term (the
   * follower answers such a stale append with its own, current term): it acknowledges nothing.
   */
  #isStale(sentTick: number): boolean {
    return sentTick < this.#startTick
  }

  /** Any other answer in this term means the follower reset its election clock on our message. */
  #acknowledge(progress: Progress, sentTick: number): boolean {
    if (sentTick > this.#host.tickCount()) return false
    progress.recentActive = true
    progress.acknowledgedTick = Math.max(progress.acknowledgedTick ?? 0, sentTick)
    return true
  }

  #handleRejection(message: AppendResponse, progress: Progress): void {
    const { log } = this.#host
    // Logs always agree at and below a snapshot, so a follower that refuses the current probe
    // there has no state at all (a new node): it needs the snapshot.
    const probed = progress.state === 'probe' && progress.next - 1 === message.index
    if (probed && message.index <= log.snapshotIndex() && log.hasSnapshot) {
      this.#sendSnapshot(message.from, progress)
      return
    }
    // etcd's leader-side jump: no entry of ours with a term above the follower's hint term can match.
    const matchHint =
      message.hintTerm > 0
        ? log.findConflictByTerm(message.hintIndex, message.hintTerm).index
        : message.hintIndex
    if (!progress.maybeDecreaseTo(message.index, matchHint)) return
    if (progress.state === 'replicate') progress.becomeProbe()
    this.sendAppend(message.from, true)
  }

  #sendSnapshot(member: NodeId, progress: Progress): boolean {
    const snapshot = this.#host.latestSnapshot()
    // Like etcd, only to a follower heard from lately: a snapshot is big.
    if (snapshot === null || !progress.recentActive) return false
    this.#host.send({
      type: 'snapshot',
      from: this.#host.id,
      to: member,
      term: this.#host.term,
      snapshot,
      sentTick: this.#host.tickCount(),
    })
    progress.becomeSnapshot(snapshot.meta.index, this.#host.tickCount())
    return true
  }

  /** Once the target has the whole log, timeoutNow lets it campaign at once. */
  #sendTimeoutNowIfCaughtUp(member: NodeId): boolean {
    if (member !== this.#transferTarget) return false
    if (this.#progress.get(member)?.match !== this.#host.log.lastIndex()) return false
    this.#host.send({ type: 'timeoutNow', from: this.#host.id, to: member, term: this.#host.term })
    this.#timeoutNowSent = true
    return true
  }
}
