// The driver runs the pure Raft core: it ticks it on a clock, feeds it messages, and
// executes each Ready batch in the order the core requires — persist, then send, then
// apply, then advance. It depends only on interfaces (Clock, RaftTransport, RaftStorage,
// StateMachine), so the real node and the simulator run this same code.
import { RaftCore } from '../consensus/raft-core.ts'
import type { RaftOptions } from '../consensus/raft-options.ts'
import { leaseTicksFor } from '../consensus/lease.ts'
import { assert } from '../consensus/assert.ts'
import type {
  ConfigChange,
  Entry,
  LogIndex,
  Message,
  NodeId,
  ProposeErrorCode,
  ProposeResult,
  Ready,
  RestoredState,
  Snapshot,
  SoftState,
  Term,
} from '../consensus/types.ts'
import type { RaftStorage } from '../storage/raft-storage.ts'
import type { Clock, TimerHandle } from './clock.ts'

/** The application the log drives (the topology on a real node; a checker in the simulator). */
export interface StateMachine {
  /** Every committed entry, in index order (noop and config entries too: the machine may ignore them). */
  apply(entry: Entry): void
  /** Replace the whole state with a snapshot's. */
  restore(snapshot: Snapshot): void
  /** The state after the last applied entry. */
  snapshot(): Uint8Array
}

export interface RaftTransport {
  /** Best effort: Raft tolerates loss, so sending never blocks and never throws. */
  send(message: Message): void
}

export type ProposalOutcome =
  | { readonly ok: true; readonly index: LogIndex }
  | {
      readonly ok: false
      readonly code: ProposeErrorCode | 'SUPERSEDED' | 'STOPPED'
      readonly leader: NodeId | null
    }

export interface RaftDriverOptions {
  readonly raft: RaftOptions
  readonly restored: RestoredState
  readonly tickMs: number
  /** Compact the log once this many entries were applied since the last snapshot. */
  readonly snapshotEntriesMin: number
  readonly storage: RaftStorage
  readonly transport: RaftTransport
  readonly clock: Clock
  readonly stateMachine: StateMachine
  readonly onSoftStateChange?: (state: SoftState) => void
  /** A storage failure stops the driver (crash-stop): continuing could break what was promised. */
  readonly onFatal?: (error: Error) => void
}

/** How many past ticks keep their clock time; a lease never reaches back further. */
const TICK_TIMES_KEPT = 1024

interface PendingProposal {
  readonly term: Term
  readonly callback: (outcome: ProposalOutcome) => void
}

export class RaftDriver {
  readonly core: RaftCore
  readonly #options: RaftDriverOptions
  readonly #leaseTicks: number
  readonly #tickTimesMs = new Float64Array(TICK_TIMES_KEPT)
  readonly #pending = new Map<number, PendingProposal>()
  #timer: TimerHandle | null = null
  /** A Ready is taken and not yet advanced: the core allows one at a time, and callbacks run meanwhile. */
  #readyInFlight = false
  #stopped = false
  #snapshotIndex: number

  constructor(options: RaftDriverOptions) {
    assert(options.tickMs > 0, 'tickMs must be positive')
    assert(options.snapshotEntriesMin > 0, 'snapshotEntriesMin must be positive')
    this.#options = options
    this.core = new RaftCore(options.raft, options.restored)
    this.#leaseTicks = leaseTicksFor(options.raft)
    this.#snapshotIndex = options.restored.snapshot?.meta.index ?? 0
    this.#tickTimesMs[0] = options.clock.nowMs()
    if (options.restored.snapshot !== null) options.stateMachine.restore(options.restored.snapshot)
  }

  start(): void {
    assert(!this.#stopped, 'a stopped driver cannot start again')
    if (this.#timer !== null) return
    this.#scheduleTick()
    this.#pump()
  }

  /** Stops ticking and drops whatever is in flight, as a crash would; pending proposals end with STOPPED. */
  stop(): void {
    this.#stopped = true
    if (this.#timer !== null) this.#options.clock.clearTimer(this.#timer)
    this.#timer = null
    const pending = [...this.#pending.values()]
    this.#pending.clear()
    for (const proposal of pending) proposal.callback({ ok: false, code: 'STOPPED', leader: null })
  }

  get stopped(): boolean {
    return this.#stopped
  }

  receive(message: Message): void {
    if (this.#stopped) return
    this.core.step(message)
    this.#pump()
  }

  propose(data: Uint8Array, callback: (outcome: ProposalOutcome) => void): void {
    this.#track(this.#stopped ? null : this.core.propose(data), callback)
  }

  proposeConfigChange(change: ConfigChange, callback: (outcome: ProposalOutcome) => void): void {
    this.#track(this.#stopped ? null : this.core.proposeConfigChange(change), callback)
  }

  transferLeadership(target: NodeId): ReturnType<RaftCore['transferLeadership']> {
    const result = this.core.transferLeadership(target)
    this.#pump()
    return result
  }

  campaign(): void {
    if (this.#stopped) return
    this.core.campaign()
    this.#pump()
  }

  setCanCampaign(value: boolean): void {
    this.core.setCanCampaign(value)
  }

  /**
   * Until when (on this node's clock) no other node can have become leader: the lease starts
   * at the clock time of the tick its quorum's acknowledged messages were sent in, which is
   * never later than the send itself (see consensus/lease.ts for the argument).
   */
  leaseExpiresAtMs(): number | null {
    if (this.#stopped) return null
    const untilTick = this.core.leaseUntilTick()
    if (untilTick === null) return null
    const startTick = untilTick - this.#leaseTicks
    const nowTick = this.core.tickCount()
    if (startTick < 0 || startTick > nowTick || nowTick - startTick >= TICK_TIMES_KEPT) return null
    return this.#tickTimesMs[startTick % TICK_TIMES_KEPT]! + this.#leaseTicks * this.#options.tickMs
  }

  #track(result: ProposeResult | null, callback: (outcome: ProposalOutcome) => void): void {
    if (result === null) return callback({ ok: false, code: 'STOPPED', leader: null })
    if (!result.ok) return callback({ ok: false, code: result.code, leader: result.leader })
    // An earlier proposal at this index was truncated away when this node lost and later
    // regained leadership: a leader's log never lacks a committed entry, so it was not committed.
    const earlier = this.#pending.get(result.index)
    if (earlier !== undefined) {
      assert(
        earlier.term < result.term,
        `two proposals at index ${result.index} in term ${result.term}`,
      )
      earlier.callback({ ok: false, code: 'SUPERSEDED', leader: this.core.softState().leader })
    }
    this.#pending.set(result.index, { term: result.term, callback })
    this.#pump()
  }

  #scheduleTick(): void {
    this.#timer = this.#options.clock.setTimer(this.#options.tickMs, () => {
      this.#timer = null
      if (this.#stopped) return
      this.core.tick()
      this.#tickTimesMs[this.core.tickCount() % TICK_TIMES_KEPT] = this.#options.clock.nowMs()
      this.#scheduleTick()
      this.#pump()
    })
  }

  /**
   * Takes Ready batches one at a time: one write in flight keeps the order, and a proposal
   * made by a callback during apply (re-entering here) waits for the loop to come round.
   */
  #pump(): void {
    while (!this.#stopped && !this.#readyInFlight && this.core.hasReady()) {
      this.#readyInFlight = true
      const ready = this.core.ready()
      if (ready.softState !== null) this.#options.onSoftStateChange?.(ready.softState)
      const needsWrite =
        ready.hardState !== null ||
        ready.entries.length > 0 ||
        ready.snapshot !== null ||
        ready.compaction !== null
      if (!needsWrite) {
        this.#finish(ready)
        continue
      }
      const batch = {
        hardState: ready.hardState,
        entries: ready.entries,
        snapshot: ready.snapshot,
        compaction: ready.compaction,
      }
      this.#options.storage.write(batch, ready.mustSync, (error) => {
        if (this.#stopped) return
        if (error !== null) return this.#fail(error)
        this.#finish(ready)
        this.#pump()
      })
    }
  }

  #finish(ready: Ready): void {
    for (const message of ready.messages) this.#options.transport.send(message)
    if (ready.snapshot !== null) this.#installSnapshot(ready.snapshot)
    for (const entry of ready.committedEntries) this.#apply(entry)
    this.core.advance(ready)
    this.#readyInFlight = false
    this.#compactIfDue()
  }

  #installSnapshot(snapshot: Snapshot): void {
    this.#options.stateMachine.restore(snapshot)
    this.#snapshotIndex = snapshot.meta.index
    // Proposals the snapshot covers may or may not be in it: their fate is unknown here.
    for (const [index, proposal] of this.#pending) {
      if (index > snapshot.meta.index) continue
      this.#pending.delete(index)
      proposal.callback({ ok: false, code: 'SUPERSEDED', leader: this.core.softState().leader })
    }
  }

  #apply(entry: Entry): void {
    this.#options.stateMachine.apply(entry)
    const proposal = this.#pending.get(entry.index)
    if (proposal === undefined) return
    this.#pending.delete(entry.index)
    proposal.callback(
      proposal.term === entry.term
        ? { ok: true, index: entry.index }
        : { ok: false, code: 'SUPERSEDED', leader: this.core.softState().leader },
    )
  }

  #compactIfDue(): void {
    const applied = this.core.appliedIndex()
    if (applied - this.#snapshotIndex < this.#options.snapshotEntriesMin) return
    this.core.compact(applied, this.#options.stateMachine.snapshot())
    this.#snapshotIndex = applied
  }

  #fail(error: Error): void {
    this.stop()
    this.#options.onFatal?.(error)
  }
}
