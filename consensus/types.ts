// The vocabulary of the Raft core, shared by the core, its driver, the log store and
// the simulator. Ids, terms and indexes are branded so that mixing them is a type error.

export type NodeId = string & { readonly __brand: 'NodeId' }
export type Term = number & { readonly __brand: 'Term' }
export type LogIndex = number & { readonly __brand: 'LogIndex' }

export const nodeId = (value: string): NodeId => value as NodeId
export const term = (value: number): Term => value as Term
export const logIndex = (value: number): LogIndex => value as LogIndex

/** `command`: application data; `config`: an encoded ConfigChange; `noop`: a new leader's first entry. */
export type EntryKind = 'command' | 'config' | 'noop'

export interface Entry {
  readonly term: Term
  readonly index: LogIndex
  readonly kind: EntryKind
  readonly data: Uint8Array
}

/** Voters elect and count towards quorums; learners only receive the log. A node is in at most one list. */
export interface Membership {
  readonly voters: readonly NodeId[]
  readonly learners: readonly NodeId[]
}

/** One server at a time (Ongaro's single-server change, with the fix: see raft-core.ts). */
export type ConfigChange =
  | { readonly type: 'addVoter'; readonly node: NodeId } // a new node, or promote a learner
  | { readonly type: 'addLearner'; readonly node: NodeId } // a new node, or demote a voter
  | { readonly type: 'remove'; readonly node: NodeId }

export interface HardState {
  readonly term: Term
  readonly vote: NodeId | null
  readonly commit: LogIndex
}

export interface SnapshotMeta {
  readonly index: LogIndex
  readonly term: Term
  readonly membership: Membership
}

export interface Snapshot {
  readonly meta: SnapshotMeta
  readonly data: Uint8Array
}

/** What a node starts from: loaded from its RaftStorage (or a bootstrap snapshot for a new cluster). */
export interface RestoredState {
  readonly hardState: HardState
  /** Entries after the snapshot, contiguous, in order. */
  readonly entries: readonly Entry[]
  readonly snapshot: Snapshot | null
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader'

interface MessageBase {
  readonly from: NodeId
  readonly to: NodeId
  readonly term: Term
}

/** A transfer-authorised campaign names the leader (and its term) that asked for it. */
export interface TransferAuthority {
  readonly leader: NodeId
  readonly term: Term
}

export type Message =
  | (MessageBase & {
      readonly type: 'preVote' | 'vote'
      readonly lastLogIndex: LogIndex
      readonly lastLogTerm: Term
      readonly transfer: TransferAuthority | null
    })
  | (MessageBase & { readonly type: 'preVoteResponse' | 'voteResponse'; readonly granted: boolean })
  | (MessageBase & {
      readonly type: 'append'
      readonly prevLogIndex: LogIndex
      readonly prevLogTerm: Term
      readonly entries: readonly Entry[]
      readonly commit: LogIndex
      /** The leader's tick when it sent this; echoed back so acknowledgements extend its lease. */
      readonly sentTick: number
    })
  | (MessageBase & {
      readonly type: 'appendResponse'
      readonly success: boolean
      /** On success: the last index now known to match the leader. On rejection: the index probed. */
      readonly index: LogIndex
      /** On rejection, where the leader should look next (fast back-tracking): the follower's last index, or the first index of the conflicting term. */
      readonly hintIndex: LogIndex
      readonly hintTerm: Term
      readonly sentTick: number
    })
  | (MessageBase & {
      readonly type: 'heartbeat'
      readonly commit: LogIndex
      readonly sentTick: number
    })
  | (MessageBase & { readonly type: 'heartbeatResponse'; readonly sentTick: number })
  | (MessageBase & {
      readonly type: 'snapshot'
      readonly snapshot: Snapshot
      readonly sentTick: number
    })
  | (MessageBase & { readonly type: 'timeoutNow' })

export type MessageType = Message['type']

/** Randomness comes in from outside, so that a seed replays a run exactly. */
export interface Random {
  /** A uniformly distributed integer in [0, maxExclusive). */
  nextInt(maxExclusive: number): number
}

/** What the node's state looks like from outside, for status and for the simulator's checks. */
export interface SoftState {
  readonly role: Role
  readonly leader: NodeId | null
  readonly term: Term
}

/**
 * Everything the core wants done, as one batch. The caller executes it in this order:
 * 1. persist `snapshot` (install: replaces the log up to its index), `compaction`
 *    (store the snapshot, drop entries up to its index), truncate after entries[0].index - 1
 *    and append `entries`, then save `hardState` — synced if `mustSync`;
 * 2. send `messages`;
 * 3. apply `snapshot` (when present) to the state machine, then `committedEntries` in order;
 * 4. call `advance(ready)`.
 */
export interface Ready {
  readonly softState: SoftState | null
  readonly hardState: HardState | null
  readonly entries: readonly Entry[]
  /** A snapshot received from the leader: persist it, then restore the state machine from it. */
  readonly snapshot: Snapshot | null
  /** A snapshot the caller asked for with compact(): persist it and drop the entries it covers. */
  readonly compaction: Snapshot | null
  readonly mustSync: boolean
  readonly messages: readonly Message[]
  readonly committedEntries: readonly Entry[]
}

export type ProposeResult =
  | { readonly ok: true; readonly index: LogIndex; readonly term: Term }
  | { readonly ok: false; readonly code: ProposeErrorCode; readonly leader: NodeId | null }

export type ProposeErrorCode =
  | 'NOT_LEADER'
  | 'TRANSFER_IN_PROGRESS'
  | 'TOO_MANY_UNCOMMITTED'
  | 'ENTRY_TOO_LARGE'
  | 'CONFIG_CHANGE_PENDING'
  | 'INVALID_CONFIG_CHANGE'
  | 'UNKNOWN_NODE'

/** Test-only switches that plant known Raft bugs, so that tests can show the checker catches them. */
export type PlantedBug =
  'forgetVoteOnRestart' | 'commitEarlierTermByCounting' | 'voteForShorterLog' | 'ignoreLeaseOnVote'
