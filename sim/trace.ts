// The run's trace: every delivered message, disk write, role change and injected fault,
// as a line. Normal runs keep only a rolling digest and the last lines (shown when an
// invariant breaks); `--trace` keeps every line. The same seed gives the same lines.
import { digestBytes, type Digest } from './digest.ts'

const encoder = new TextEncoder()

export class Trace {
  readonly #recentMax: number
  readonly #recent: string[] = []
  readonly #all: string[] | null
  #digest: Digest = 0
  #count = 0

  constructor(options: { recentMax: number; keepAll: boolean }) {
    this.#recentMax = options.recentMax
    this.#all = options.keepAll ? [] : null
  }

  add(timeMs: number, line: string): void {
    const full = `${timeMs.toFixed(3).padStart(11)} ${line}`
    this.#count++
    this.#digest = digestBytes(encoder.encode(full), this.#digest)
    this.#recent.push(full)
    if (this.#recent.length > this.#recentMax) this.#recent.shift()
    this.#all?.push(full)
  }

  get count(): number {
    return this.#count
  }

  get digest(): Digest {
    return this.#digest
  }

  recent(): readonly string[] {
    return this.#recent
  }

  all(): readonly string[] {
    return this.#all ?? []
  }
}
