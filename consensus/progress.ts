// What the leader knows of one follower's log (etcd's tracker.Progress): match, the highest
// index known to be replicated there; next, the next index to send; and how to send:
// - probe: one append at a time until a response shows where the logs agree;
// - replicate: stream appends optimistically, at most maxInflightAppends unacknowledged;
// - snapshot: a snapshot is on its way, send nothing else until it is acknowledged.
import { assert } from './assert.ts'
import type { LogIndex } from './types.ts'
import { logIndex } from './types.ts'

export type ProgressState = 'probe' | 'replicate' | 'snapshot'

/** The last indexes of the appends in flight, oldest first, in a ring of fixed capacity. */
export class Inflights {
  readonly #lastIndexes: number[]
  #start = 0
  #count = 0

  constructor(capacity: number) {
    assert(Number.isSafeInteger(capacity) && capacity >= 1, 'inflight capacity is positive')
    this.#lastIndexes = new Array<number>(capacity).fill(0)
  }

  get count(): number {
    return this.#count
  }

  full(): boolean {
    return this.#count === this.#lastIndexes.length
  }

  add(lastIndex: number): void {
    assert(!this.full(), 'an append was sent with the inflight window full')
    this.#lastIndexes[(this.#start + this.#count) % this.#lastIndexes.length] = lastIndex
    this.#count++
  }

  /** Frees every append whose last index the follower has now acknowledged. */
  freeUpTo(index: number): void {
    while (this.#count > 0 && this.#lastIndexes[this.#start]! <= index) this.#freeFirst()
  }

  /** Lets one more append out when all of them may have been lost (etcd's FreeFirstOne). */
  freeFirst(): void {
    if (this.#count > 0) this.#freeFirst()
  }

  reset(): void {
    this.#start = 0
    this.#count = 0
  }

  #freeFirst(): void {
    this.#start = (this.#start + 1) % this.#lastIndexes.length
    this.#count--
  }
}

export class Progress {
  match: LogIndex = logIndex(0)
  next: LogIndex
  state: ProgressState = 'probe'
  /** In probe state: an append was sent and neither its answer nor a heartbeat answer came yet. */
  probeSent = false
  /** The index of the snapshot in flight (snapshot state). */
  pendingSnapshot: LogIndex = logIndex(0)
  /** The leader's tick when that snapshot was sent: it is given up on after a while, since it may be lost. */
  snapshotSentTick = 0
  /** Heard from since the last CheckQuorum. */
  recentActive: boolean
  /** The largest sentTick this follower acknowledged in this term: the lease is built on it. */
  acknowledgedTick: number | null = null
  readonly inflights: Inflights

  constructor(next: LogIndex, inflightAppendsMax: number, recentActive: boolean) {
    this.next = next
    this.recentActive = recentActive
    this.inflights = new Inflights(inflightAppendsMax)
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent
      case 'replicate':
        return this.inflights.full()
      case 'snapshot':
        return true
    }
  }

  becomeProbe(): void {
    // After a snapshot the follower has at least the snapshot's entries.
    const floor =
      this.state === 'snapshot' ? Math.max(this.match, this.pendingSnapshot) : this.match
    this.#reset('probe', logIndex(floor + 1))
  }

  becomeReplicate(): void {
    this.#reset('replicate', logIndex(this.match + 1))
  }

  becomeSnapshot(snapshotIndex: LogIndex, tick: number): void {
    this.#reset('snapshot', this.next)
    this.pendingSnapshot = snapshotIndex
    this.snapshotSentTick = tick
  }

  /** A success response: true when it raised match (stale and duplicate ones do not). */
  maybeUpdate(index: LogIndex): boolean {
    this.next = logIndex(Math.max(this.next, index + 1))
    if (index <= this.match) return false
    this.match = index
    this.probeSent = false
    return true
  }

  /**
   * A rejection of the append at `rejected`: move next back, to just after `matchHint`
   * (the leader's findConflictByTerm of the follower's hint) but never to or below match.
   * False for a stale rejection, which changes nothing.
   */
  maybeDecreaseTo(rejected: LogIndex, matchHint: LogIndex): boolean {
    // The follower already confirmed everything up to match in this term.
    if (rejected <= this.match) return false
    if (this.state === 'replicate') {
      this.next = logIndex(this.match + 1)
      return true
    }
    // A probe goes out one at a time: an answer to any other is stale.
    if (this.next - 1 !== rejected) return false
    this.next = logIndex(Math.max(Math.min(rejected, matchHint + 1), this.match + 1))
    this.probeSent = false
    return true
  }

  /** Bookkeeping after an append carrying entries up to `lastIndex` (none when it equals next - 1). */
  sentAppend(lastIndex: LogIndex, entryCount: number): void {
    if (this.state === 'probe') {
      this.probeSent = true
      return
    }
    assert(this.state === 'replicate', 'no append is sent while a snapshot is in flight')
    if (entryCount === 0) return
    this.next = logIndex(lastIndex + 1)
    this.inflights.add(lastIndex)
  }

  #reset(state: ProgressState, next: LogIndex): void {
    this.state = state
    this.next = next
    this.probeSent = false
    this.pendingSnapshot = logIndex(0)
    this.inflights.reset()
    assert(this.match < this.next, `match ${this.match} not below next ${this.next}`)
  }
}
