// The simulator's state machine: its whole state is the index it applied up to and a
// chain digest of every entry applied so far, so the checker can compare any two nodes
// at any index (State Machine Safety) and check that a snapshot holds what it claims.
import type { Entry, Snapshot } from '../consensus/types.ts'
import type { StateMachine } from '../node/raft-driver.ts'
import { digestBytes, digestNumbers, type Digest } from './digest.ts'

export interface ApplyObserver {
  onApply(entry: Entry, chain: Digest, appliedBefore: number): void
  /** `metaIndex` is what the snapshot claims, `stateIndex` what its data holds. */
  onRestore(metaIndex: number, stateIndex: number, chain: Digest): void
}

const KINDS = { command: 1, config: 2, noop: 3 } as const

export function entryDigest(entry: Entry): Digest {
  return digestBytes(entry.data, digestNumbers([entry.term, entry.index, KINDS[entry.kind]]))
}

export function encodeMachineState(index: number, chain: Digest): Uint8Array {
  const bytes = new Uint8Array(16)
  const view = new DataView(bytes.buffer)
  view.setFloat64(0, index)
  view.setFloat64(8, chain)
  return bytes
}

function decodeMachineState(bytes: Uint8Array): { index: number; chain: Digest } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  return { index: view.getFloat64(0), chain: view.getFloat64(8) }
}

export class SimStateMachine implements StateMachine {
  readonly #observer: ApplyObserver
  appliedIndex = 0
  chain: Digest = 0

  constructor(observer: ApplyObserver) {
    this.#observer = observer
  }

  apply(entry: Entry): void {
    const before = this.appliedIndex
    this.chain = digestNumbers([this.chain, entryDigest(entry)])
    this.appliedIndex = entry.index
    this.#observer.onApply(entry, this.chain, before)
  }

  restore(snapshot: Snapshot): void {
    const state = decodeMachineState(snapshot.data)
    this.appliedIndex = state.index
    this.chain = state.chain
    this.#observer.onRestore(snapshot.meta.index, state.index, state.chain)
  }

  snapshot(): Uint8Array {
    return encodeMachineState(this.appliedIndex, this.chain)
  }
}
