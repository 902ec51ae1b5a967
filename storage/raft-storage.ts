// The seam between the Raft driver and durable storage. The real node persists through
// RaftLogStore (classic-level); the simulator implements the same interface over a
// simulated disk that loses unsynced writes on a crash.
import type { Entry, HardState, Snapshot } from '../consensus/types.ts'

/** The durable part of one Ready, applied as one atomic unit in this order: snapshot, compaction, entries, hard state. */
export interface RaftWriteBatch {
  readonly hardState: HardState | null
  /** Truncates the log at entries[0].index and after, then appends these. */
  readonly entries: readonly Entry[]
  /** Installed from the leader: replaces every entry ≤ its index (and all entries if they do not match it). */
  readonly snapshot: Snapshot | null
  /** Stored as the latest snapshot; entries ≤ its index are deleted. */
  readonly compaction: Snapshot | null
}

export interface RaftStorage {
  /** Persist one Ready's durable part as ONE atomic batch; call `done` once it is durable (synced when `sync`). */
  write(batch: RaftWriteBatch, sync: boolean, done: (error: Error | null) => void): void
}
