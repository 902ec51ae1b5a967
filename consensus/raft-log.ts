// The in-memory Raft log: the snapshot it follows (index, term, membership), the entries
// after it, the membership each config entry leaves in effect, and where persistence and
// applying stand. Indexes only ever refer to the same entry while its term matches (Log
// Matching), so "an index and a term" is how the rest of the core names an entry.
//
// Entries are handed to the caller in Ready batches: handedOut ≤ lastIndex marks what was
// given to storage (in flight or done), stable ≤ handedOut what is known to be durable.
// Committed entries are handed out for applying up to `applying`; `applied` follows on
// advance. A truncation lowers stable and handedOut to just below it, so the new entries
// are handed out again.
import { assert } from './assert.ts'
import { EMPTY_MEMBERSHIP, membershipAfterEntry } from './membership.ts'
import type { Entry, LogIndex, Membership, SnapshotMeta, Term } from './types.ts'
import { logIndex, term } from './types.ts'

interface ConfigPoint {
  readonly index: LogIndex
  /** The membership in effect from this index on. */
  readonly membership: Membership
}

export type AppendOutcome =
  | { readonly kind: 'appended'; readonly lastNewIndex: LogIndex }
  /** The log has no entry at prevLogIndex with prevLogTerm. */
  | { readonly kind: 'mismatch' }
  /** The leader's entries disagree with a committed one: bad peer input, never applied. */
  | { readonly kind: 'conflictsWithCommitted'; readonly index: LogIndex }

const NO_SNAPSHOT: SnapshotMeta = {
  index: logIndex(0),
  term: term(0),
  membership: EMPTY_MEMBERSHIP,
}

export class RaftLog {
  #base: SnapshotMeta
  #hasSnapshot: boolean
  #entries: Entry[] = []
  #configs: ConfigPoint[] = []
  #commit: LogIndex
  #applying: LogIndex
  #applied: LogIndex
  #stable: LogIndex
  #handedOut: LogIndex

  constructor(snapshot: SnapshotMeta | null, entries: readonly Entry[], commit: LogIndex) {
    this.#base = snapshot ?? NO_SNAPSHOT
    this.#hasSnapshot = snapshot !== null
    for (const entry of entries) this.#appendOne(entry)
    // A snapshot holds only committed entries, even if the saved commit lags behind it.
    this.#commit = logIndex(Math.max(commit, this.#base.index))
    assert(
      this.#commit <= this.lastIndex(),
      `restored commit ${commit} is beyond the last index ${this.lastIndex()}`,
    )
    this.#applying = this.#base.index
    this.#applied = this.#base.index
    this.#stable = this.lastIndex()
    this.#handedOut = this.lastIndex()
  }

  /** False only for a new node that has never received any state: it needs a snapshot first. */
  get hasSnapshot(): boolean {
    return this.#hasSnapshot
  }

  snapshotMeta(): SnapshotMeta | null {
    return this.#hasSnapshot ? this.#base : null
  }

  snapshotIndex(): LogIndex {
    return this.#base.index
  }

  firstIndex(): LogIndex {
    return logIndex(this.#base.index + 1)
  }

  lastIndex(): LogIndex {
    return logIndex(this.#base.index + this.#entries.length)
  }

  lastTerm(): Term {
    return this.#entries.at(-1)?.term ?? this.#base.term
  }

  commitIndex(): LogIndex {
    return this.#commit
  }

  appliedIndex(): LogIndex {
    return this.#applied
  }

  stableIndex(): LogIndex {
    return this.#stable
  }

  /** Null when the index was compacted into the snapshot (other than the snapshot's own) or is beyond the log. */
  termAt(index: number): Term | null {
    if (index === this.#base.index) return this.#base.term
    return this.entryAt(index)?.term ?? null
  }

  entryAt(index: number): Entry | null {
    if (index <= this.#base.index) return null
    return this.#entries[index - this.#base.index - 1] ?? null
  }

  matchTerm(index: number, entryTerm: Term): boolean {
    return this.termAt(index) === entryTerm
  }

  /** The vote rule's "at least as up to date": a later last term, or the same and a log no shorter. */
  isUpToDate(lastIndex: LogIndex, lastTerm: Term): boolean {
    const ownTerm = this.lastTerm()
    return lastTerm > ownTerm || (lastTerm === ownTerm && lastIndex >= this.lastIndex())
  }

  /**
   * etcd's findConflictByTerm: the largest index at or below `index` whose term is at most
   * `maxTerm`, and that term. No entry above it can match a log whose entry at `index` has a
   * term ≤ maxTerm, since terms never go down along a log. A term of 0 means "unknown here".
   */
  findConflictByTerm(index: number, maxTerm: number): { index: LogIndex; term: Term } {
    if (index > this.lastIndex()) return { index: logIndex(index), term: term(0) }
    for (let at = index; at >= this.#base.index; at--) {
      const atTerm = this.termAt(at)!
      if (atTerm <= maxTerm) return { index: logIndex(at), term: atTerm }
    }
    return { index: logIndex(this.#base.index), term: term(0) }
  }

  membership(): Membership {
    return this.#configs.at(-1)?.membership ?? this.#base.membership
  }

  membershipAt(index: number): Membership {
    assert(index >= this.#base.index, `membership asked at ${index}, before the snapshot`)
    let membership = this.#base.membership
    for (const point of this.#configs) {
      if (point.index > index) break
      membership = point.membership
    }
    return membership
  }

  /** The index of the latest config entry in the log (the snapshot's when there is none after it). */
  lastConfigIndex(): LogIndex {
    return this.#configs.at(-1)?.index ?? this.#base.index
  }

  /** A follower's append: the entries after prevIndex replace whatever disagrees with them. */
  tryAppend(prevIndex: LogIndex, prevTerm: Term, entries: readonly Entry[]): AppendOutcome {
    if (!this.matchTerm(prevIndex, prevTerm)) return { kind: 'mismatch' }
    for (const [position, entry] of entries.entries()) {
      if (this.matchTerm(entry.index, entry.term)) continue
      if (entry.index <= this.#commit) return { kind: 'conflictsWithCommitted', index: entry.index }
      if (entry.index <= this.lastIndex()) this.#truncateFrom(entry.index)
      for (const newEntry of entries.slice(position)) this.#appendOne(newEntry)
      break
    }
    return { kind: 'appended', lastNewIndex: logIndex(prevIndex + entries.length) }
  }

  /** The leader's own entries, always after its last. */
  append(entry: Entry): void {
    this.#appendOne(entry)
  }

  /** Entries from `index` on for an append message: at least one when there is one, then within both bounds. */
  entriesFrom(index: LogIndex, countMax: number, bytesMax: number): Entry[] {
    assert(index > this.#base.index, `entries from ${index} were compacted`)
    const start = index - this.#base.index - 1
    const found: Entry[] = []
    let bytes = 0
    for (const entry of this.#entries.slice(start, start + countMax)) {
      bytes += entry.data.length
      if (found.length > 0 && bytes > bytesMax) break
      found.push(entry)
    }
    return found
  }

  commitTo(index: LogIndex): void {
    assert(index > this.#commit, `commit goes from ${this.#commit} down to ${index}`)
    assert(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`)
    this.#commit = index
  }

  /** A snapshot from the leader replaces the whole log; commit and applied jump to it. */
  restore(meta: SnapshotMeta): void {
    assert(
      !this.#hasSnapshot || meta.index > this.#commit,
      'a snapshot restore moves commit forward',
    )
    this.#base = meta
    this.#hasSnapshot = true
    this.#entries = []
    this.#configs = []
    this.#commit = meta.index
    this.#applying = meta.index
    this.#applied = meta.index
    this.#stable = meta.index
    this.#handedOut = meta.index
  }

  /** The state machine's snapshot at meta.index: entries up to it leave memory. */
  compact(meta: SnapshotMeta): void {
    assert(meta.index > this.#base.index, 'compaction goes forward')
    assert(
      meta.index <= this.#applied,
      `compaction at ${meta.index} beyond applied ${this.#applied}`,
    )
    assert(this.termAt(meta.index) === meta.term, 'compaction meta matches the log')
    this.#entries = this.#entries.slice(meta.index - this.#base.index)
    this.#configs = this.#configs.filter((point) => point.index > meta.index)
    this.#base = meta
    this.#hasSnapshot = true
  }

  hasEntriesToHandOut(): boolean {
    return this.#handedOut < this.lastIndex()
  }

  /** Entries not yet given to storage; the caller persists them before the next Ready. */
  handOutEntries(): Entry[] {
    const entries = this.#entries.slice(this.#handedOut - this.#base.index)
    this.#handedOut = this.lastIndex()
    return entries
  }

  /** Called on advance: every entry handed out so far (and still in the log) is durable now. */
  markStable(): void {
    assert(this.#handedOut <= this.lastIndex(), 'stable index beyond the last index')
    this.#stable = this.#handedOut
  }

  hasCommittedToHandOut(): boolean {
    return this.#applying < this.#commit
  }

  /** Committed entries not yet handed out for applying; all are persisted by this Ready or an earlier one. */
  handOutCommitted(countMax: number, bytesMax: number): Entry[] {
    if (this.#applying >= this.#commit) return []
    const count = Math.min(countMax, this.#commit - this.#applying)
    const entries = this.entriesFrom(logIndex(this.#applying + 1), count, bytesMax)
    this.#applying = entries.at(-1)!.index
    return entries
  }

  markApplied(): void {
    assert(
      this.#applying <= this.#commit,
      `applying ${this.#applying} beyond commit ${this.#commit}`,
    )
    this.#applied = this.#applying
  }

  #appendOne(entry: Entry): void {
    assert(
      entry.index === this.lastIndex() + 1,
      `entry ${entry.index} does not follow ${this.lastIndex()}`,
    )
    assert(entry.term >= this.lastTerm(), `entry ${entry.index} term ${entry.term} goes down`)
    const before = this.membership()
    this.#entries.push(entry)
    if (entry.kind === 'config') {
      this.#configs.push({ index: entry.index, membership: membershipAfterEntry(before, entry) })
    }
  }

  #truncateFrom(index: LogIndex): void {
    assert(index > this.#commit, `truncating committed entry ${index}`)
    this.#entries.length = index - this.#base.index - 1
    while ((this.#configs.at(-1)?.index ?? 0) >= index) this.#configs.pop()
    this.#stable = logIndex(Math.min(this.#stable, index - 1))
    this.#handedOut = logIndex(Math.min(this.#handedOut, index - 1))
  }
}
