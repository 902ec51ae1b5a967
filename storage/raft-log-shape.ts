// What the store keeps in memory about the log on disk (snapshot point, the term of every
// entry, the commit index), so that a write batch can be turned into LevelDB puts and deletes
// without reading the disk first: LevelDB has no range delete inside an atomic batch.
// Planning asserts the Raft core's side of the contract; a violation is a programmer error.
import { assert } from '../consensus/assert.ts'
import type {
  Entry,
  HardState,
  LogIndex,
  RestoredState,
  Snapshot,
  SnapshotMeta,
  Term,
} from '../consensus/types.ts'
import {
  encodeEntry,
  encodeHardState,
  encodeSnapshot,
  entryKey,
  HARD_STATE_KEY,
  SNAPSHOT_KEY,
} from './raft-record-codec.ts'
import type { RaftWriteBatch } from './raft-storage.ts'

/** The most entries the log may hold after its snapshot; load() loads them all into memory. */
export const LOG_ENTRIES_MAX = 1_000_000
/** The most entries one write may append. */
export const WRITE_ENTRIES_MAX = 65_536
/** The most record bytes one write may put (entries, snapshot and hard state together). */
export const WRITE_BYTES_MAX = 256 * 1024 * 1024

export type LevelOperation =
  | { readonly type: 'put'; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: Uint8Array }

/** Why a snapshot's meta cannot be right, or null when it is consistent. */
export function snapshotMetaProblem(meta: SnapshotMeta): string | null {
  if (!Number.isSafeInteger(meta.index) || meta.index < 0) return `bad index ${meta.index}`
  if (!Number.isSafeInteger(meta.term) || meta.term < 0) return `bad term ${meta.term}`
  // Every real entry has a term of at least 1; only an empty bootstrap point sits at index 0.
  if ((meta.index === 0) !== (meta.term === 0))
    return `index ${meta.index} with term ${meta.term} (term 0 belongs to index 0 only)`
  const seen = new Set<string>()
  for (const node of [...meta.membership.voters, ...meta.membership.learners]) {
    if (node.length === 0) return 'an empty node id in the membership'
    if (seen.has(node)) return `node ${node} listed twice in the membership`
    seen.add(node)
  }
  return null
}

export class RaftLogShape {
  private snapshotIndex: LogIndex
  private snapshotTerm: Term
  /** terms[offset] is the term of entry snapshotIndex + 1 + offset. */
  private terms: Term[]
  private commit: LogIndex

  /** `restored` must have passed the store's load checks. */
  constructor(restored: RestoredState) {
    this.snapshotIndex = restored.snapshot?.meta.index ?? (0 as LogIndex)
    this.snapshotTerm = restored.snapshot?.meta.term ?? (0 as Term)
    this.terms = restored.entries.map((entry) => entry.term)
    this.commit = restored.hardState.commit
  }

  get lastIndex(): LogIndex {
    return (this.snapshotIndex + this.terms.length) as LogIndex
  }

  /** The term at `index`, or null when the log holds no entry there (nor the snapshot point). */
  termAt(index: LogIndex): Term | null {
    if (index === this.snapshotIndex) return this.snapshotTerm
    if (index < this.snapshotIndex) return null
    return this.terms[index - this.snapshotIndex - 1] ?? null
  }

  /** Turns one batch into operations, in the order of the Ready contract, and updates the shape to match. */
  plan(batch: RaftWriteBatch): LevelOperation[] {
    const operations: LevelOperation[] = []
    if (batch.snapshot !== null) this.installSnapshot(batch.snapshot, operations)
    if (batch.compaction !== null) this.compact(batch.compaction, operations)
    if (batch.entries.length > 0) this.append(batch.entries, operations)
    if (batch.hardState !== null) this.saveHardState(batch.hardState, operations)
    assert(
      this.commit <= Math.max(this.lastIndex, this.snapshotIndex),
      `commit ${this.commit} is beyond the last index ${this.lastIndex}`,
    )
    const putBytes = operations.reduce(
      (sum, operation) => sum + (operation.type === 'put' ? operation.value.length : 0),
      0,
    )
    assert(putBytes <= WRITE_BYTES_MAX, `one write of ${putBytes} bytes`)
    return operations
  }

  private installSnapshot(snapshot: Snapshot, operations: LevelOperation[]): void {
    const { index, term } = snapshot.meta
    assert(index >= this.snapshotIndex, `snapshot ${index} is older than ${this.snapshotIndex}`)
    // Entries after the snapshot survive only if the log agrees with it at its index.
    const agrees = this.termAt(index) === term
    this.replaceSnapshot(snapshot, agrees ? index : this.lastIndex, operations)
  }

  private compact(snapshot: Snapshot, operations: LevelOperation[]): void {
    const { index, term } = snapshot.meta
    assert(
      index >= this.snapshotIndex && index <= this.lastIndex,
      `compaction ${index} outside the log ${this.snapshotIndex}..${this.lastIndex}`,
    )
    assert(this.termAt(index) === term, `compaction ${index} has term ${term}, the log another`)
    this.replaceSnapshot(snapshot, index, operations)
  }

  /** Stores `snapshot` and deletes the entries up to `dropThrough` (at most the last index). */
  private replaceSnapshot(
    snapshot: Snapshot,
    dropThrough: number,
    operations: LevelOperation[],
  ): void {
    const problem = snapshotMetaProblem(snapshot.meta)
    assert(problem === null, `snapshot: ${problem}`)
    for (let index = this.snapshotIndex + 1; index <= dropThrough; index++)
      operations.push({ type: 'del', key: entryKey(index as LogIndex) })
    this.terms.splice(0, dropThrough - this.snapshotIndex)
    this.snapshotIndex = snapshot.meta.index
    this.snapshotTerm = snapshot.meta.term
    operations.push({ type: 'put', key: SNAPSHOT_KEY, value: encodeSnapshot(snapshot) })
  }

  private append(entries: readonly Entry[], operations: LevelOperation[]): void {
    assert(entries.length <= WRITE_ENTRIES_MAX, `one write of ${entries.length} entries`)
    const first = entries[0]!.index
    assert(
      first > this.snapshotIndex && first <= this.lastIndex + 1,
      `entries from ${first} do not attach to a log of ${this.snapshotIndex + 1}..${this.lastIndex}`,
    )
    let previousTerm = this.termAt((first - 1) as LogIndex)!
    for (const [offset, entry] of entries.entries()) {
      assert(entry.index === first + offset, `entry ${entry.index} at position ${first + offset}`)
      assert(
        Number.isSafeInteger(entry.term) && entry.term >= Math.max(1, previousTerm),
        `entry ${entry.index} has term ${entry.term} after term ${previousTerm}`,
      )
      previousTerm = entry.term
    }
    const newLastIndex = first + entries.length - 1
    assert(
      newLastIndex - this.snapshotIndex <= LOG_ENTRIES_MAX,
      `the log would hold ${newLastIndex - this.snapshotIndex} entries: compact it first`,
    )
    for (let index = newLastIndex + 1; index <= this.lastIndex; index++)
      operations.push({ type: 'del', key: entryKey(index as LogIndex) })
    for (const entry of entries)
      operations.push({ type: 'put', key: entryKey(entry.index), value: encodeEntry(entry) })
    this.terms.length = first - this.snapshotIndex - 1
    for (const entry of entries) this.terms.push(entry.term)
  }

  private saveHardState(hardState: HardState, operations: LevelOperation[]): void {
    assert(
      Number.isSafeInteger(hardState.term) && hardState.term >= 0,
      `hard state term ${hardState.term}`,
    )
    assert(
      Number.isSafeInteger(hardState.commit) && hardState.commit >= 0,
      `hard state commit ${hardState.commit}`,
    )
    assert(hardState.vote !== '', 'hard state votes for an empty node id')
    this.commit = hardState.commit
    operations.push({ type: 'put', key: HARD_STATE_KEY, value: encodeHardState(hardState) })
  }
}
