// Simulated time: a queue of actions ordered by (time, insertion order), so that two
// events at the same instant always run in the order they were scheduled.
import { assert } from '../consensus/assert.ts'

export interface ScheduledEvent {
  readonly timeMs: number
  readonly sequence: number
  cancelled: boolean
  readonly action: () => void
}

export class EventQueue {
  readonly #heap: ScheduledEvent[] = []
  #sequence = 0
  #nowMs = 0

  get nowMs(): number {
    return this.#nowMs
  }

  get size(): number {
    return this.#heap.length
  }

  schedule(timeMs: number, action: () => void): ScheduledEvent {
    assert(
      Number.isFinite(timeMs) && timeMs >= this.#nowMs,
      `event scheduled in the past: ${timeMs} < ${this.#nowMs}`,
    )
    const event: ScheduledEvent = { timeMs, sequence: this.#sequence++, cancelled: false, action }
    this.#push(event)
    return event
  }

  /** Runs the next event that is due at or before `untilMs`; false when there is none. */
  runNext(untilMs: number): boolean {
    while (this.#heap.length > 0) {
      const next = this.#heap[0]!
      if (next.timeMs > untilMs) return false
      this.#pop()
      if (next.cancelled) continue
      this.#nowMs = next.timeMs
      next.action()
      return true
    }
    return false
  }

  /** Moves time forward with nothing to run (the queue holds nothing earlier). */
  advanceTo(timeMs: number): void {
    assert(timeMs >= this.#nowMs, 'time never goes back')
    assert(
      this.#heap.length === 0 || this.#heap[0]!.timeMs >= timeMs || this.#heap[0]!.cancelled,
      'events are due before the target time',
    )
    this.#nowMs = timeMs
  }

  #before(a: ScheduledEvent, b: ScheduledEvent): boolean {
    return a.timeMs < b.timeMs || (a.timeMs === b.timeMs && a.sequence < b.sequence)
  }

  #push(event: ScheduledEvent): void {
    const heap = this.#heap
    heap.push(event)
    let index = heap.length - 1
    while (index > 0) {
      const parent = (index - 1) >> 1
      if (!this.#before(heap[index]!, heap[parent]!)) break
      ;[heap[index], heap[parent]] = [heap[parent]!, heap[index]!]
      index = parent
    }
  }

  #pop(): void {
    const heap = this.#heap
    const last = heap.pop()!
    if (heap.length === 0) return
    heap[0] = last
    let index = 0
    for (;;) {
      const left = index * 2 + 1
      const right = left + 1
      let smallest = index
      if (left < heap.length && this.#before(heap[left]!, heap[smallest]!)) smallest = left
      if (right < heap.length && this.#before(heap[right]!, heap[smallest]!)) smallest = right
      if (smallest === index) return
      ;[heap[index], heap[smallest]] = [heap[smallest]!, heap[index]!]
      index = smallest
    }
  }
}
