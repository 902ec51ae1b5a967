// The topology as the Raft driver's state machine: it applies committed command entries in
// index order (noop and config entries carry nothing for it), snapshots the state as
// canonical bytes and restores from them. An entry that does not decode, or a command that
// an earlier one made invalid, changes nothing; listeners hear why, on every node alike.
import { assert } from '../../consensus/assert.ts'
import type { ClusterError } from '../../consensus/cluster-error.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { Entry, LogIndex, Snapshot } from '../../consensus/types.ts'
import type { StateMachine } from '../raft-driver.ts'
import { decodeCommand, type TopologyCommand } from './commands.ts'
import { LISTENERS_MAX } from './limits.ts'
import { decodeTopology, encodeTopology } from './state-codec.ts'
import { EMPTY_TOPOLOGY, type TopologyState } from './topology-state.ts'
import { executeCommand } from './transition.ts'
import { LOG_CONTEXT, validateCommand, type ValidationContext } from './validate.ts'

export type ApplyResult =
  { readonly ok: true } | { readonly ok: false; readonly error: ClusterError }

/** `command` is null when the entry's bytes did not decode. */
export type AppliedListener = (
  index: LogIndex,
  command: TopologyCommand | null,
  result: ApplyResult,
  state: TopologyState,
) => void

export type RestoredListener = (index: LogIndex, state: TopologyState) => void

export class TopologyMachine implements StateMachine {
  #state: TopologyState = EMPTY_TOPOLOGY
  #appliedIndex = 0
  readonly #appliedListeners = new Set<AppliedListener>()
  readonly #restoredListeners = new Set<RestoredListener>()

  get state(): TopologyState {
    return this.#state
  }

  get appliedIndex(): LogIndex {
    return this.#appliedIndex as LogIndex
  }

  /** Whether a command would be accepted now; the leader asks before it proposes. */
  validate(command: TopologyCommand, context: ValidationContext): ClusterError | null {
    return validateCommand(this.#state, command, context)
  }

  apply(entry: Entry): void {
    assert(
      entry.index === this.#appliedIndex + 1,
      `entries are applied in order: ${entry.index} after ${this.#appliedIndex}`,
    )
    this.#appliedIndex = entry.index
    if (entry.kind !== 'command') return
    let command: TopologyCommand
    try {
      command = decodeCommand(entry.data)
    } catch (error) {
      if (!isClusterError(error)) throw error
      return this.#notifyApplied(entry.index, null, { ok: false, error })
    }
    const outcome = executeCommand(this.#state, command, LOG_CONTEXT)
    if (outcome.ok) this.#state = outcome.state
    this.#notifyApplied(entry.index, command, outcome.ok ? { ok: true } : outcome)
  }

  /** Throws CORRUPT_STORE for a damaged snapshot, leaving the state as it was. */
  restore(snapshot: Snapshot): void {
    this.#state = decodeTopology(snapshot.data)
    this.#appliedIndex = snapshot.meta.index
    for (const listener of this.#restoredListeners) listener(snapshot.meta.index, this.#state)
  }

  snapshot(): Uint8Array {
    return encodeTopology(this.#state)
  }

  /** Hears every command entry applied, accepted or not. Returns a function that stops it. */
  onApplied(listener: AppliedListener): () => void {
    return addListener(this.#appliedListeners, listener)
  }

  /** Hears every restore from a snapshot, which replaces the whole state. */
  onRestored(listener: RestoredListener): () => void {
    return addListener(this.#restoredListeners, listener)
  }

  #notifyApplied(index: LogIndex, command: TopologyCommand | null, result: ApplyResult): void {
    for (const listener of this.#appliedListeners) listener(index, command, result, this.#state)
  }
}

function addListener<T>(listeners: Set<T>, listener: T): () => void {
  assert(listeners.size < LISTENERS_MAX, `at most ${LISTENERS_MAX} listeners of one kind`)
  listeners.add(listener)
  return () => listeners.delete(listener)
}
