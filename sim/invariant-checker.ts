// The safety properties of Raft (Figure 3 of the paper) and of the leader lease, checked
// incrementally as events happen, so that a check after every event stays cheap:
// - Election Safety: at most one leader per term; underneath it, no node votes for two
//   candidates in one term (checked on what each node persists).
// - Log Matching: an (index, term) pair always names the same entry with the same
//   predecessor term, hence (by induction) the same log prefix.
// - Leader Completeness: a new leader's log holds every entry applied in an earlier term
//   (a leader of an old term may still win late, from delayed votes: it need not hold
//   what later terms committed).
// - State Machine Safety: every node applies the same entry at an index; a snapshot's
//   state equals the state every node had at its index.
// - Lease: at no instant do two nodes hold a valid lease.
import type { Entry, NodeId } from '../consensus/types.ts'
import type { RaftCore } from '../consensus/raft-core.ts'
import type { RaftWriteBatch } from '../storage/raft-storage.ts'
import type { Digest } from './digest.ts'
import { entryDigest } from './sim-state-machine.ts'

export interface Violation {
  readonly invariant: string
  readonly detail: string
  readonly atMs: number
}

export interface LeaseHolder {
  readonly node: NodeId
  /** Simulator (global) time until which the node believes it holds the lease. */
  readonly untilGlobalMs: number
}

export class InvariantChecker {
  readonly violations: Violation[] = []
  readonly #now: () => number
  readonly #leaderOfTerm = new Map<number, NodeId>()
  /** "node@term" → the candidate it persisted a vote for. */
  readonly #votes = new Map<string, NodeId>()
  /** (index, term) → digest of the entry and the term before it. */
  readonly #logEntries = new Map<string, { digest: Digest; previousTerm: number }>()
  /**
   * index → chain digest after applying it, the entry's term, and the term in which it was
   * known committed: the first applier's current term, never below the true commit term.
   */
  readonly #applied = new Map<number, { chain: Digest; term: number; committedInTerm: number }>()
  #appliedMax = 0

  constructor(now: () => number) {
    this.#now = now
  }

  /** How many terms had a leader: a measure of how much the run churned. */
  get leaderTerms(): number {
    return this.#leaderOfTerm.size
  }

  get appliedMax(): number {
    return this.#appliedMax
  }

  #fail(invariant: string, detail: string): void {
    this.violations.push({ invariant, detail, atMs: this.#now() })
  }

  onLeader(node: NodeId, term: number, core: RaftCore): void {
    const other = this.#leaderOfTerm.get(term)
    if (other !== undefined && other !== node) {
      this.#fail('Election Safety', `${other} and ${node} were both leader in term ${term}`)
    }
    this.#leaderOfTerm.set(term, node)
    const snapshotIndex = core.snapshotMeta()?.index ?? 0
    for (const [index, applied] of this.#applied) {
      if (index <= snapshotIndex || applied.committedInTerm >= term) continue
      const entry = core.entryAt(index as Entry['index'])
      if (entry === null || entry.term !== applied.term) {
        this.#fail(
          'Leader Completeness',
          `${node} became leader of term ${term} without applied entry ${index} (term ${applied.term}; it has ${entry === null ? 'none' : `term ${entry.term}`})`,
        )
        return
      }
    }
  }

  onPersist(node: NodeId, batch: RaftWriteBatch, previousTerm: number): void {
    const vote = batch.hardState?.vote
    if (vote != null) {
      const key = `${node}@${batch.hardState!.term}`
      const earlier = this.#votes.get(key)
      if (earlier === undefined) this.#votes.set(key, vote)
      else if (earlier !== vote) {
        this.#fail(
          'Election Safety',
          `${node} voted for ${earlier} and for ${vote} in term ${batch.hardState!.term}`,
        )
      }
    }
    let before = previousTerm
    for (const entry of batch.entries) {
      const key = `${entry.index}:${entry.term}`
      const digest = entryDigest(entry)
      const known = this.#logEntries.get(key)
      if (known === undefined) this.#logEntries.set(key, { digest, previousTerm: before })
      else if (known.digest !== digest || known.previousTerm !== before) {
        this.#fail(
          'Log Matching',
          `${node} wrote entry ${entry.index} of term ${entry.term} (after term ${before}) unlike another node's (after term ${known.previousTerm})`,
        )
      }
      before = entry.term
    }
  }

  onApply(
    node: NodeId,
    entry: Entry,
    chain: Digest,
    appliedBefore: number,
    nodeTerm: number,
  ): void {
    if (entry.index !== appliedBefore + 1) {
      this.#fail(
        'State Machine Safety',
        `${node} applied entry ${entry.index} right after ${appliedBefore}`,
      )
    }
    const known = this.#applied.get(entry.index)
    if (known === undefined) {
      this.#applied.set(entry.index, { chain, term: entry.term, committedInTerm: nodeTerm })
      this.#appliedMax = Math.max(this.#appliedMax, entry.index)
    } else if (known.chain !== chain) {
      this.#fail(
        'State Machine Safety',
        `${node} applied a different entry or history at index ${entry.index} (term ${entry.term} vs ${known.term})`,
      )
    }
  }

  onRestore(node: NodeId, metaIndex: number, stateIndex: number, chain: Digest): void {
    if (metaIndex !== stateIndex) {
      this.#fail(
        'State Machine Safety',
        `${node} restored a snapshot that claims index ${metaIndex} but holds ${stateIndex}`,
      )
      return
    }
    const known = this.#applied.get(metaIndex)
    if (metaIndex > 0 && known !== undefined && known.chain !== chain) {
      this.#fail(
        'State Machine Safety',
        `${node} restored a snapshot at ${metaIndex} unlike the state nodes applied there`,
      )
    }
  }

  checkLeases(holders: readonly LeaseHolder[]): void {
    const now = this.#now()
    const valid = holders.filter((holder) => holder.untilGlobalMs > now)
    if (valid.length > 1) {
      const described = valid
        .map((holder) => `${holder.node} until ${holder.untilGlobalMs.toFixed(1)} ms`)
        .join(', ')
      this.#fail('Lease', `two nodes hold a valid lease at ${now.toFixed(1)} ms: ${described}`)
    }
  }
}
