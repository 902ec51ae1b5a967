// A node's disk in the simulator. It implements the same RaftStorage interface as the
// classic-level store, completes writes in order after a simulated latency, and on a
// crash keeps what was synced plus a random prefix of what was not (a page cache that had
// flushed some of it) — so code that sends before it syncs gets caught.
import type { Entry, HardState, RestoredState, Snapshot } from '../consensus/types.ts'
import { logIndex, term } from '../consensus/types.ts'
import { assert } from '../consensus/assert.ts'
import type { RaftStorage, RaftWriteBatch } from '../storage/raft-storage.ts'
import type { EventQueue, ScheduledEvent } from './event-queue.ts'
import type { SeededRandom } from './seeded-random.ts'

interface DiskState {
  hardState: HardState
  snapshot: Snapshot | null
  /** Entries after the snapshot, contiguous. */
  entries: Entry[]
}

export interface DiskLatency {
  readonly writeMsMin: number
  readonly writeMsMax: number
  readonly syncMsMin: number
  readonly syncMsMax: number
}

/** Told of every write as it becomes visible, with the term of the entry before the first one written. */
export type PersistObserver = (batch: RaftWriteBatch, previousTerm: number) => void

const emptyState = (): DiskState => ({
  hardState: { term: term(0), vote: null, commit: logIndex(0) },
  snapshot: null,
  entries: [],
})

function copyState(state: DiskState): DiskState {
  return { hardState: state.hardState, snapshot: state.snapshot, entries: [...state.entries] }
}

function lastIndexOf(state: DiskState): number {
  return state.entries.at(-1)?.index ?? state.snapshot?.meta.index ?? 0
}

function termAt(state: DiskState, index: number): number | null {
  const snapshotIndex = state.snapshot?.meta.index ?? 0
  if (index === snapshotIndex) return state.snapshot?.meta.term ?? 0
  if (index < snapshotIndex) return null
  return state.entries[index - snapshotIndex - 1]?.term ?? null
}

/** The meaning of a write, shared with storage/raft-log-store.ts: snapshot, compaction, entries, hard state. */
function applyBatch(state: DiskState, batch: RaftWriteBatch): void {
  if (batch.snapshot !== null) {
    const { index, term: snapshotTerm } = batch.snapshot.meta
    const matches = termAt(state, index) === snapshotTerm
    state.entries = matches ? state.entries.filter((entry) => entry.index > index) : []
    state.snapshot = batch.snapshot
  }
  if (batch.compaction !== null) {
    const index = batch.compaction.meta.index
    assert(index >= (state.snapshot?.meta.index ?? 0), 'compaction goes forward')
    assert(
      termAt(state, index) === batch.compaction.meta.term,
      `compaction at ${index} does not match the log`,
    )
    state.entries = state.entries.filter((entry) => entry.index > index)
    state.snapshot = batch.compaction
  }
  const first = batch.entries[0]
  if (first !== undefined) {
    const snapshotIndex = state.snapshot?.meta.index ?? 0
    assert(
      first.index > snapshotIndex,
      `entries at ${first.index} overwrite the snapshot at ${snapshotIndex}`,
    )
    assert(
      first.index <= lastIndexOf(state) + 1,
      `gap before entry ${first.index} (last ${lastIndexOf(state)})`,
    )
    state.entries = state.entries.slice(0, first.index - snapshotIndex - 1).concat(batch.entries)
  }
  if (batch.hardState !== null) state.hardState = batch.hardState
}

export class SimDisk implements RaftStorage {
  readonly #queue: EventQueue
  readonly #random: SeededRandom
  readonly #latency: DiskLatency
  #durable: DiskState = emptyState()
  #visible: DiskState = emptyState()
  /** Completed writes since the last sync, kept to decide what a crash loses. */
  #unsynced: RaftWriteBatch[] = []
  #inFlight: ScheduledEvent[] = []
  #lastCompletionMs = 0
  slowFactor = 1
  observer: PersistObserver | null = null

  constructor(queue: EventQueue, random: SeededRandom, latency: DiskLatency) {
    this.#queue = queue
    this.#random = random
    this.#latency = latency
  }

  /** A fresh cluster member starts from a bootstrap snapshot, as `init` writes it. */
  bootstrap(snapshot: Snapshot): void {
    const state = emptyState()
    state.snapshot = snapshot
    state.hardState = { term: snapshot.meta.term, vote: null, commit: snapshot.meta.index }
    this.#durable = state
    this.#visible = copyState(state)
  }

  write(batch: RaftWriteBatch, sync: boolean, done: (error: Error | null) => void): void {
    const latency = this.#latency
    let delayMs = this.#random.between(latency.writeMsMin, latency.writeMsMax)
    if (sync) delayMs += this.#random.between(latency.syncMsMin, latency.syncMsMax)
    const completionMs =
      Math.max(this.#queue.nowMs, this.#lastCompletionMs) + delayMs * this.slowFactor
    this.#lastCompletionMs = completionMs
    const event = this.#queue.schedule(completionMs, () => {
      this.#inFlight.shift()
      applyBatch(this.#visible, batch)
      // After the batch, so that a snapshot installed by the same batch counts.
      const first = batch.entries[0]
      const previousTerm = first === undefined ? 0 : termAt(this.#visible, first.index - 1)
      assert(previousTerm !== null, `no term before entry ${first?.index} after the write`)
      this.#unsynced.push(batch)
      if (sync) this.#sync()
      this.observer?.(batch, previousTerm)
      done(null)
    })
    this.#inFlight.push(event)
  }

  /** What survives a crash: the synced state and a random prefix of the unsynced writes. */
  crash(): void {
    for (const event of this.#inFlight) event.cancelled = true
    this.#inFlight = []
    const survivors = this.#random.between(0, this.#unsynced.length)
    for (const batch of this.#unsynced.slice(0, survivors)) applyBatch(this.#durable, batch)
    this.#unsynced = []
    this.#visible = copyState(this.#durable)
    this.#lastCompletionMs = this.#queue.nowMs
  }

  load(): RestoredState {
    assert(this.#inFlight.length === 0, 'load only after a crash or at the start')
    const state = this.#visible
    return { hardState: state.hardState, snapshot: state.snapshot, entries: [...state.entries] }
  }

  #sync(): void {
    for (const batch of this.#unsynced) applyBatch(this.#durable, batch)
    this.#unsynced = []
  }
}
