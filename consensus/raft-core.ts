// The Raft state machine of clusterreplica, in the manner of etcd-io/raft (raft.go and
// rawnode.go): pure, with time entering by tick(), randomness by options.random, messages
// by step(), and everything to be done leaving as a Ready batch (persist, send, apply,
// then advance). It runs PreVote, CheckQuorum, lease-based vote refusal (lease.ts),
// single-server membership changes with the "commit an entry of your own term first" fix,
// and leadership transfer. Each role has its own step and tick function, switched on role
// change. Bad peer input is dropped and counted, never thrown.
import { assert } from './assert.ts'
import { encodeConfigChange } from './codec.ts'
import { leaseTicksFor } from './lease.ts'
import {
  COMMITTED_BYTES_PER_READY_MAX,
  COMMITTED_ENTRIES_PER_READY_MAX,
  OUTBOX_MESSAGES_MAX,
  SNAPSHOT_DATA_BYTES_MAX,
} from './limits.ts'
import { applyConfigChange, isVoter } from './membership.ts'
import { messageProblem, snapshotMetaProblem } from './message-validation.ts'
import { voteOutcome } from './quorum.ts'
import { RaftLog } from './raft-log.ts'
import { validateRaftOptions, type RaftOptions } from './raft-options.ts'
import { LeaderReplication } from './replication.ts'
import type {
  ConfigChange,
  Entry,
  EntryKind,
  HardState,
  LogIndex,
  Membership,
  Message,
  NodeId,
  ProposeErrorCode,
  ProposeResult,
  Ready,
  RestoredState,
  Role,
  Snapshot,
  SnapshotMeta,
  SoftState,
  Term,
  TransferAuthority,
} from './types.ts'
import { logIndex, term } from './types.ts'

export { DEFAULT_RAFT_LIMITS, type RaftOptions } from './raft-options.ts'
export { encodeConfigChange, decodeConfigChange } from './codec.ts'

type MessageOf<T extends Message['type']> = Extract<Message, { type: T }>
type VoteRequest = MessageOf<'preVote' | 'vote'>
type VoteResponse = MessageOf<'preVoteResponse' | 'voteResponse'>
type CampaignKind = 'preElection' | 'election' | 'transfer'
type TransferResult =
  { ok: true } | { ok: false; code: 'NOT_LEADER' | 'UNKNOWN_NODE' | 'TRANSFER_IN_PROGRESS' }

const NO_PROGRESS: ReadonlyMap<NodeId, { readonly match: LogIndex; readonly next: LogIndex }> =
  new Map()

const sameSoftState = (a: SoftState, b: SoftState): boolean =>
  a.role === b.role && a.leader === b.leader && a.term === b.term

const sameHardState = (a: HardState, b: HardState): boolean =>
  a.term === b.term && a.vote === b.vote && a.commit === b.commit

export class RaftCore {
  readonly #options: RaftOptions
  readonly #id: NodeId
  readonly #electionTicks: number
  readonly #leaseTicks: number
  readonly #log: RaftLog
  #term: Term
  #vote: NodeId | null
  #role: Role = 'follower'
  #leader: NodeId | null = null
  #canCampaign: boolean
  #tickCount = 0
  /** Ticks since the last reset: a leader's message, a granted vote, a role change; for a leader, since the last CheckQuorum. */
  #electionElapsed = 0
  #heartbeatElapsed = 0
  #electionTimeoutTicks = 0
  /** A restarted node keeps, for its first E ticks, the promise it may have made to a leader before the crash. */
  #restartPromise: boolean
  /** Answers to this node's current (pre)vote round, its own included. */
  readonly #votes = new Map<NodeId, boolean>()
  #replication: LeaderReplication | null = null
  #stepRole: (this: RaftCore, message: Message) => void = this.#stepFollower
  #tickRole: (this: RaftCore) => void = this.#tickElection
  /** The newest snapshot this node has (restored, installed or compacted): what it sends to lagging followers. */
  #latestSnapshot: Snapshot | null
  #pendingInstall: Snapshot | null = null
  #pendingCompaction: Snapshot | null = null
  #outbox: Message[] = []
  #readyInFlight: Ready | null = null
  #lastSoftState: SoftState
  #lastHardState: HardState
  #invalidMessages = 0
  #droppedMessages = 0

  constructor(options: RaftOptions, restored: RestoredState) {
    const problem = validateRaftOptions(options)
    assert(problem === null, `invalid RaftOptions: ${problem}`)
    const snapshot = restored.snapshot
    if (snapshot !== null) {
      const metaProblem = snapshotMetaProblem(snapshot.meta)
      assert(metaProblem === null, `restored snapshot: ${metaProblem}`)
    }
    this.#options = options
    this.#id = options.id
    this.#electionTicks = options.electionTicks
    this.#leaseTicks = leaseTicksFor(options)
    this.#canCampaign = options.canCampaign
    this.#log = new RaftLog(snapshot?.meta ?? null, restored.entries, restored.hardState.commit)
    this.#latestSnapshot = snapshot
    this.#term = restored.hardState.term
    // Planted bug 'forgetVoteOnRestart': the vote cast before the crash is lost, so this node may vote twice in one term.
    this.#vote = options.plantedBug === 'forgetVoteOnRestart' ? null : restored.hardState.vote
    // A node still in term 0 never answered a leader, so it promised nothing.
    // Planted bug 'ignoreLeaseOnVote': a restarted node does not keep that promise either.
    this.#restartPromise = restored.hardState.term > 0 && options.plantedBug !== 'ignoreLeaseOnVote'
    this.#becomeFollower(this.#term, null)
    this.#lastSoftState = this.softState()
    this.#lastHardState = restored.hardState
  }

  // ---- input ------------------------------------------------------------------------

  tick(): void {
    this.#tickCount++
    this.#tickRole()
  }

  step(message: Message): void {
    if (message.to !== this.#id || messageProblem(message) !== null) {
      this.#invalidMessages++
      return
    }
    if (message.term > this.#term) {
      if (!this.#enterHigherTerm(message)) return
    } else if (message.term < this.#term) {
      this.#answerLowerTerm(message)
      return
    }
    if (message.type === 'preVote' || message.type === 'vote') this.#handleVoteRequest(message)
    else this.#stepRole(message)
  }

  /** Starts an election now, PreVote first. A no-op for a leader, a node that may not campaign, or one keeping its lease promise. */
  campaign(): void {
    if (this.#role === 'leader' || !this.#promotable() || this.#inLease()) return
    this.#campaign('preElection')
  }

  propose(data: Uint8Array): ProposeResult {
    const refusal = this.#proposalRefusal()
    if (refusal !== null) return refusal
    if (data.length > this.#options.maxEntryBytes) return this.#refuse('ENTRY_TOO_LARGE')
    return this.#proposeEntry('command', data)
  }

  proposeConfigChange(change: ConfigChange): ProposeResult {
    const refusal = this.#proposalRefusal()
    if (refusal !== null) return refusal
    // Ongaro's fix for single-server changes: no change before this leader has committed
    // an entry of its own term, and only one uncommitted change at a time.
    const commit = this.#log.commitIndex()
    if (this.#log.termAt(commit) !== this.#term || this.#log.lastConfigIndex() > commit)
      return this.#refuse('CONFIG_CHANGE_PENDING')
    const outcome = applyConfigChange(this.#log.membership(), change)
    if (!outcome.ok) return this.#refuse(outcome.code)
    return this.#proposeEntry('config', encodeConfigChange(change))
  }

  transferLeadership(target: NodeId): TransferResult {
    if (this.#replication === null) return { ok: false, code: 'NOT_LEADER' }
    if (this.#replication.transferTarget !== null)
      return { ok: false, code: 'TRANSFER_IN_PROGRESS' }
    if (target === this.#id || !isVoter(this.#log.membership(), target))
      return { ok: false, code: 'UNKNOWN_NODE' }
    // The transfer has one election timeout to complete (see #tickLeader).
    this.#electionElapsed = 0
    this.#replication.startTransfer(target)
    return { ok: true }
  }

  setCanCampaign(value: boolean): void {
    this.#canCampaign = value
  }

  /** The state machine's snapshot at `index` (at most the applied index): the log before it leaves memory. */
  compact(index: LogIndex, data: Uint8Array): void {
    assert(
      index <= this.#log.appliedIndex(),
      `compact(${index}) beyond applied ${this.#log.appliedIndex()}`,
    )
    assert(
      data.length <= SNAPSHOT_DATA_BYTES_MAX,
      `snapshot data of ${data.length} bytes is over the limit`,
    )
    if (index <= this.#log.snapshotIndex()) return
    const meta: SnapshotMeta = {
      index,
      term: this.#log.termAt(index)!,
      membership: this.#log.membershipAt(index),
    }
    this.#log.compact(meta)
    this.#latestSnapshot = { meta, data }
    this.#pendingCompaction = this.#latestSnapshot
  }

  // ---- output -----------------------------------------------------------------------

  hasReady(): boolean {
    return (
      this.#outbox.length > 0 ||
      this.#log.hasEntriesToHandOut() ||
      this.#log.hasCommittedToHandOut() ||
      this.#pendingInstall !== null ||
      this.#pendingCompaction !== null ||
      !sameSoftState(this.softState(), this.#lastSoftState) ||
      !sameHardState(this.hardState(), this.#lastHardState)
    )
  }

  ready(): Ready {
    assert(this.#readyInFlight === null, 'ready() called again before advance()')
    const softState = this.softState()
    const hardState = this.hardState()
    const entries = this.#log.handOutEntries()
    const ready: Ready = {
      softState: sameSoftState(softState, this.#lastSoftState) ? null : softState,
      hardState: sameHardState(hardState, this.#lastHardState) ? null : hardState,
      entries,
      snapshot: this.#pendingInstall,
      compaction: this.#pendingCompaction,
      // Messages in this batch may depend on a new term, vote, entries or snapshot.
      mustSync:
        entries.length > 0 ||
        this.#pendingInstall !== null ||
        hardState.term !== this.#lastHardState.term ||
        hardState.vote !== this.#lastHardState.vote,
      messages: this.#outbox,
      committedEntries: this.#log.handOutCommitted(
        COMMITTED_ENTRIES_PER_READY_MAX,
        COMMITTED_BYTES_PER_READY_MAX,
      ),
    }
    this.#outbox = []
    this.#pendingInstall = null
    this.#pendingCompaction = null
    this.#lastSoftState = softState
    this.#lastHardState = hardState
    this.#readyInFlight = ready
    return ready
  }

  advance(ready: Ready): void {
    assert(ready === this.#readyInFlight, 'advance() takes the Ready that ready() returned')
    this.#readyInFlight = null
    this.#log.markStable()
    this.#log.markApplied()
    // The leader counts its own entries only once they are durable.
    if (this.#replication?.maybeCommit() === true) this.#replication.broadcastAppend()
    this.#stepDownIfRemoved()
  }

  // ---- read-only views --------------------------------------------------------------

  softState(): SoftState {
    return { role: this.#role, leader: this.#leader, term: this.#term }
  }

  hardState(): HardState {
    return { term: this.#term, vote: this.#vote, commit: this.#log.commitIndex() }
  }

  /** In effect: the latest config in the log, committed or not. */
  membership(): Membership {
    return this.#log.membership()
  }

  tickCount(): number {
    return this.#tickCount
  }

  /** Leader only: the lease holds while tickCount() <= this (see lease.ts); null when there is none. */
  leaseUntilTick(): number | null {
    return this.#replication?.leaseUntilTick() ?? null
  }

  entryAt(index: LogIndex): Entry | null {
    return this.#log.entryAt(index)
  }

  firstIndex(): LogIndex {
    return this.#log.firstIndex()
  }

  lastIndex(): LogIndex {
    return this.#log.lastIndex()
  }

  commitIndex(): LogIndex {
    return this.#log.commitIndex()
  }

  appliedIndex(): LogIndex {
    return this.#log.appliedIndex()
  }

  snapshotMeta(): SnapshotMeta | null {
    return this.#log.snapshotMeta()
  }

  /** Leader only (else empty): every member's match and next, this node's match being its durable last index. */
  progress(): ReadonlyMap<NodeId, { readonly match: LogIndex; readonly next: LogIndex }> {
    return this.#replication?.progressView() ?? NO_PROGRESS
  }

  transferTarget(): NodeId | null {
    return this.#replication?.transferTarget ?? null
  }

  /** Messages dropped as invalid (malformed, misaddressed, or impossible from a correct peer). */
  invalidMessageCount(): number {
    return this.#invalidMessages
  }

  /** Messages not sent because the outbox was full. */
  droppedMessageCount(): number {
    return this.#droppedMessages
  }

  // ---- terms and roles --------------------------------------------------------------

  /** A message from a later term: returns false when it is to be ignored altogether. */
  #enterHigherTerm(message: Message): boolean {
    if (message.type === 'preVote' || message.type === 'vote') {
      if (this.#inLease() && !this.#transferAllows(message)) return false
      // A preVote never changes the term: the sender only asks whether it could win.
      if (message.type === 'vote') this.#becomeFollower(message.term, null)
      return true
    }
    // A granted preVote answer carries the term this node would campaign in.
    if (message.type === 'preVoteResponse' && message.granted) return true
    const fromLeader =
      message.type === 'append' || message.type === 'heartbeat' || message.type === 'snapshot'
    // Beyond etcd: while a follower keeps its lease promise, not even a stale answer may move
    // it to a later term without a leader, where it would be free to vote. (A leader promised
    // nothing to anyone else: it learns the newer term and steps down.)
    if (!fromLeader && this.#role !== 'leader' && this.#inLease()) return false
    this.#becomeFollower(message.term, fromLeader ? message.from : null)
    return true
  }

  /** A stale leader learns the newer term from the answer; a stale preCandidate from the refusal. */
  #answerLowerTerm(message: Message): void {
    if (message.type === 'append' || message.type === 'heartbeat') {
      this.#send({
        type: 'appendResponse',
        from: this.#id,
        to: message.from,
        term: this.#term,
        success: false,
        index: message.type === 'append' ? message.prevLogIndex : logIndex(0),
        hintIndex: logIndex(0),
        hintTerm: term(0),
        sentTick: message.sentTick,
      })
    } else if (message.type === 'preVote') {
      this.#send({
        type: 'preVoteResponse',
        from: this.#id,
        to: message.from,
        term: this.#term,
        granted: false,
      })
    }
  }

  #reset(newTerm: Term): void {
    assert(newTerm >= this.#term, `term goes down from ${this.#term} to ${newTerm}`)
    if (newTerm !== this.#term) {
      this.#term = newTerm
      this.#vote = null
    }
    this.#leader = null
    this.#electionElapsed = 0
    this.#heartbeatElapsed = 0
    const jitter = this.#options.random.nextInt(this.#electionTicks)
    assert(
      Number.isInteger(jitter) && jitter >= 0 && jitter < this.#electionTicks,
      'Random.nextInt in range',
    )
    this.#electionTimeoutTicks = this.#electionTicks + jitter
    this.#votes.clear()
    this.#replication = null
  }

  #becomeFollower(newTerm: Term, leader: NodeId | null): void {
    this.#reset(newTerm)
    this.#role = 'follower'
    this.#leader = leader
    this.#stepRole = this.#stepFollower
    this.#tickRole = this.#tickElection
  }

  /** Unlike a candidate, a preCandidate changes neither its term nor its vote. */
  #becomePreCandidate(): void {
    assert(this.#role !== 'leader', 'a leader does not campaign')
    this.#votes.clear()
    this.#leader = null
    this.#role = 'preCandidate'
    this.#restartPromise = false
    this.#stepRole = this.#stepCandidate
    this.#tickRole = this.#tickElection
  }

  #becomeCandidate(): void {
    assert(this.#role !== 'leader', 'a leader does not campaign')
    this.#reset(term(this.#term + 1))
    this.#setVote(this.#id)
    this.#role = 'candidate'
    this.#restartPromise = false
    this.#stepRole = this.#stepCandidate
    this.#tickRole = this.#tickElection
  }

  #becomeLeader(): void {
    assert(this.#role === 'candidate', 'only a candidate becomes leader')
    this.#reset(this.#term)
    this.#role = 'leader'
    this.#leader = this.#id
    this.#stepRole = this.#stepLeader
    this.#tickRole = this.#tickLeader
    this.#replication = new LeaderReplication({
      id: this.#id,
      options: this.#options,
      log: this.#log,
      term: this.#term,
      leaseTicks: this.#leaseTicks,
      tickCount: () => this.#tickCount,
      latestSnapshot: () => this.#latestSnapshot,
      send: (message) => this.#send(message),
    })
    // The paper's §5.4.2 / §8: an entry of the new term, so earlier ones can commit under it.
    this.#appendEntry('noop', new Uint8Array(0))
  }

  #setVote(candidate: NodeId): void {
    assert(this.#vote === null || this.#vote === candidate, `second vote in term ${this.#term}`)
    this.#vote = candidate
  }

  #promotable(): boolean {
    return this.#canCampaign && isVoter(this.#log.membership(), this.#id)
  }

  /** The lease promise (lease.ts): heard from a leader (or restarted) less than E ticks ago. */
  #inLease(): boolean {
    // Planted bug 'ignoreLeaseOnVote': the promise every lease rests on is not kept.
    if (this.#options.plantedBug === 'ignoreLeaseOnVote') return false
    return (
      this.#electionElapsed < this.#electionTicks && (this.#leader !== null || this.#restartPromise)
    )
  }

  /** A campaign the current leader asked for (timeoutNow) may pass the lease, and only that one. */
  #transferAllows(request: VoteRequest): boolean {
    const transfer = request.transfer
    return transfer !== null && transfer.term === this.#term && transfer.leader === this.#leader
  }

  // ---- ticks --------------------------------------------------------------------------

  #tickElection(): void {
    this.#electionElapsed++
    if (this.#electionElapsed >= this.#electionTicks) this.#restartPromise = false
    if (this.#promotable() && this.#electionElapsed >= this.#electionTimeoutTicks) {
      this.#electionElapsed = 0
      this.#campaign('preElection')
    }
  }

  #tickLeader(): void {
    const replication = this.#replication!
    this.#heartbeatElapsed++
    this.#electionElapsed++
    if (this.#electionElapsed >= this.#electionTicks) {
      this.#electionElapsed = 0
      // CheckQuorum; and a transfer that did not complete within E ticks ends this
      // leadership, since a late timeoutNow could still start an election.
      if (!replication.checkQuorumActive() || replication.transferTarget !== null) {
        this.#becomeFollower(this.#term, null)
        return
      }
    }
    if (this.#heartbeatElapsed >= this.#options.heartbeatTicks) {
      this.#heartbeatElapsed = 0
      replication.broadcastHeartbeat()
    }
  }

  // ---- elections ----------------------------------------------------------------------

  #campaign(kind: CampaignKind): void {
    let transfer: TransferAuthority | null = null
    if (kind === 'preElection') this.#becomePreCandidate()
    else {
      if (kind === 'transfer') transfer = { leader: this.#leader!, term: this.#term }
      this.#becomeCandidate()
    }
    const type = kind === 'preElection' ? 'preVote' : 'vote'
    const voteTerm = term(kind === 'preElection' ? this.#term + 1 : this.#term)
    this.#votes.set(this.#id, true)
    for (const voter of this.#log.membership().voters) {
      if (voter === this.#id) continue
      this.#send({
        type,
        from: this.#id,
        to: voter,
        term: voteTerm,
        lastLogIndex: this.#log.lastIndex(),
        lastLogTerm: this.#log.lastTerm(),
        transfer,
      })
    }
    this.#tallyVotes()
  }

  #handleVoteRequest(request: VoteRequest): void {
    // The lease promise: no answer at all, so the candidate learns nothing and the term stays.
    if (this.#inLease() && !this.#transferAllows(request)) return
    const canVote =
      this.#vote === request.from ||
      (this.#vote === null && this.#leader === null) ||
      (request.type === 'preVote' && request.term > this.#term)
    // Planted bug 'voteForShorterLog': the candidate's log is not compared with ours.
    const upToDate =
      this.#options.plantedBug === 'voteForShorterLog' ||
      this.#log.isUpToDate(request.lastLogIndex, request.lastLogTerm)
    const type = request.type === 'preVote' ? 'preVoteResponse' : 'voteResponse'
    const granted = canVote && upToDate
    // A grant carries the request's term, so that a preCandidate (asking at its term + 1) hears it.
    const answerTerm = granted ? request.term : this.#term
    if (granted && request.type === 'vote') {
      this.#electionElapsed = 0
      this.#setVote(request.from)
    }
    this.#send({ type, from: this.#id, to: request.from, term: answerTerm, granted })
  }

  #countVote(response: VoteResponse): void {
    const preVote = response.type === 'preVoteResponse'
    if (preVote !== (this.#role === 'preCandidate')) return
    // A grant of this round's preVote carries our term + 1; anything else, our term.
    const expectedTerm = preVote && response.granted ? this.#term + 1 : this.#term
    if (response.term !== expectedTerm) return
    if (!isVoter(this.#log.membership(), response.from) || this.#votes.has(response.from)) return
    this.#votes.set(response.from, response.granted)
    this.#tallyVotes()
  }

  #tallyVotes(): void {
    const outcome = voteOutcome(this.#log.membership().voters, this.#votes)
    if (outcome === 'lost') this.#becomeFollower(this.#term, null)
    else if (outcome === 'won' && this.#role === 'preCandidate') this.#campaign('election')
    else if (outcome === 'won') {
      this.#becomeLeader()
      this.#replication!.broadcastAppend()
    }
  }

  // ---- per-role steps -----------------------------------------------------------------

  #stepFollower(message: Message): void {
    switch (message.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        if (this.#leader !== null && this.#leader !== message.from) {
          this.#invalidMessages++ // two leaders in one term: impossible from correct peers
          return
        }
        this.#electionElapsed = 0
        this.#leader = message.from
        if (message.type === 'append') this.#handleAppend(message)
        else if (message.type === 'heartbeat') this.#handleHeartbeat(message)
        else this.#handleSnapshot(message)
        return
      case 'timeoutNow':
        if (this.#leader === message.from && this.#promotable()) this.#campaign('transfer')
        return
      default:
        return
    }
  }

  #stepCandidate(message: Message): void {
    switch (message.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        // Someone won this term.
        this.#becomeFollower(this.#term, message.from)
        this.#stepFollower(message)
        return
      case 'preVoteResponse':
      case 'voteResponse':
        this.#countVote(message)
        return
      default:
        return
    }
  }

  #stepLeader(message: Message): void {
    const replication = this.#replication!
    let valid = true
    if (message.type === 'appendResponse') valid = replication.handleAppendResponse(message)
    else if (message.type === 'heartbeatResponse')
      valid = replication.handleHeartbeatResponse(message)
    else if (
      message.type === 'append' ||
      message.type === 'heartbeat' ||
      message.type === 'snapshot'
    )
      valid = false // another leader in this term: impossible from correct peers
    if (!valid) this.#invalidMessages++
    this.#stepDownIfRemoved()
  }

  // ---- the follower's side of replication ---------------------------------------------

  #respondToAppend(
    message: MessageOf<'append' | 'snapshot'>,
    success: boolean,
    index: LogIndex,
    hint: { index: LogIndex; term: Term } = { index: logIndex(0), term: term(0) },
  ): void {
    this.#send({
      type: 'appendResponse',
      from: this.#id,
      to: message.from,
      term: this.#term,
      success,
      index,
      hintIndex: hint.index,
      hintTerm: hint.term,
      sentTick: message.sentTick,
    })
  }

  #handleAppend(message: MessageOf<'append'>): void {
    const log = this.#log
    // A new node has no state to match anything against: refusing leads the leader to send its snapshot.
    if (!log.hasSnapshot) return this.#respondToAppend(message, false, message.prevLogIndex)
    if (message.prevLogIndex < log.commitIndex())
      return this.#respondToAppend(message, true, log.commitIndex())
    const outcome = log.tryAppend(message.prevLogIndex, message.prevLogTerm, message.entries)
    switch (outcome.kind) {
      case 'appended': {
        // Only what this message showed to match the leader's log may be committed.
        const commit = Math.min(message.commit, outcome.lastNewIndex)
        if (commit > log.commitIndex()) log.commitTo(logIndex(commit))
        return this.#respondToAppend(message, true, outcome.lastNewIndex)
      }
      case 'mismatch': {
        const probe = Math.min(message.prevLogIndex, log.lastIndex())
        const hint = log.findConflictByTerm(probe, message.prevLogTerm)
        return this.#respondToAppend(message, false, message.prevLogIndex, hint)
      }
      case 'conflictsWithCommitted':
        this.#invalidMessages++
        return
    }
  }

  #handleHeartbeat(message: MessageOf<'heartbeat'>): void {
    // The leader sends min(match, commit), which this log holds; more is bad input, clamped.
    if (message.commit > this.#log.lastIndex()) this.#invalidMessages++
    const commit = Math.min(message.commit, this.#log.lastIndex())
    if (commit > this.#log.commitIndex()) this.#log.commitTo(logIndex(commit))
    this.#send({
      type: 'heartbeatResponse',
      from: this.#id,
      to: message.from,
      term: this.#term,
      sentTick: message.sentTick,
    })
  }

  #handleSnapshot(message: MessageOf<'snapshot'>): void {
    const log = this.#log
    const { meta } = message.snapshot
    if (log.hasSnapshot && meta.index <= log.commitIndex())
      return this.#respondToAppend(message, true, log.commitIndex())
    if (log.hasSnapshot && log.matchTerm(meta.index, meta.term)) {
      // The log already holds the snapshot's entries: keep it, and what follows.
      log.commitTo(meta.index)
      return this.#respondToAppend(message, true, log.commitIndex())
    }
    log.restore(meta)
    this.#latestSnapshot = message.snapshot
    this.#pendingInstall = message.snapshot
    this.#pendingCompaction = null // the installed snapshot supersedes it
    this.#respondToAppend(message, true, log.lastIndex())
  }

  // ---- the leader's proposals ---------------------------------------------------------

  #refuse(code: ProposeErrorCode): ProposeResult {
    return { ok: false, code, leader: this.#leader }
  }

  #proposalRefusal(): ProposeResult | null {
    if (this.#replication === null) return this.#refuse('NOT_LEADER')
    if (this.#replication.transferTarget !== null) return this.#refuse('TRANSFER_IN_PROGRESS')
    const uncommitted = this.#log.lastIndex() - this.#log.commitIndex()
    if (uncommitted >= this.#options.maxUncommittedEntries)
      return this.#refuse('TOO_MANY_UNCOMMITTED')
    return null
  }

  #proposeEntry(kind: EntryKind, data: Uint8Array): ProposeResult {
    const entry = this.#appendEntry(kind, data)
    this.#replication!.broadcastAppend()
    return { ok: true, index: entry.index, term: entry.term }
  }

  #appendEntry(kind: EntryKind, data: Uint8Array): Entry {
    const entry: Entry = {
      term: this.#term,
      index: logIndex(this.#log.lastIndex() + 1),
      kind,
      data,
    }
    this.#log.append(entry)
    // A config takes effect as soon as it is in the log.
    if (kind === 'config') this.#replication!.syncMembers()
    return entry
  }

  /** A leader whose own removal or demotion has committed steps down. */
  #stepDownIfRemoved(): void {
    if (this.#role !== 'leader') return
    if (this.#log.lastConfigIndex() > this.#log.commitIndex()) return
    if (!isVoter(this.#log.membership(), this.#id)) this.#becomeFollower(this.#term, null)
  }

  #send(message: Message): void {
    if (this.#outbox.length >= OUTBOX_MESSAGES_MAX) {
      this.#droppedMessages++
      return
    }
    this.#outbox.push(message)
  }
}
