// A node's clock in the simulator: virtual time seen through a constant rate error and
// offset (bounded drift), with timers that the node loses when it crashes.
import type { Clock, TimerHandle } from '../node/clock.ts'
import type { EventQueue, ScheduledEvent } from './event-queue.ts'
import { assert } from '../consensus/assert.ts'

export class SimClock implements Clock {
  readonly #queue: EventQueue
  readonly #timers = new Map<number, ScheduledEvent>()
  #nextId = 1
  /** Local milliseconds per global millisecond, within [1 - drift, 1 + drift]. */
  readonly rate: number
  readonly offsetMs: number

  constructor(queue: EventQueue, rate: number, offsetMs: number) {
    assert(rate > 0, 'a clock rate is positive')
    this.#queue = queue
    this.rate = rate
    this.offsetMs = offsetMs
  }

  nowMs(): number {
    return this.offsetMs + this.#queue.nowMs * this.rate
  }

  /** Global (simulator) time at which this clock shows `localMs`. */
  toGlobalMs(localMs: number): number {
    return (localMs - this.offsetMs) / this.rate
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.#nextId++
    const event = this.#queue.schedule(this.#queue.nowMs + Math.max(0, delayMs) / this.rate, () => {
      this.#timers.delete(id)
      callback()
    })
    this.#timers.set(id, event)
    return { id }
  }

  clearTimer(handle: TimerHandle): void {
    const event = this.#timers.get(handle.id)
    if (event === undefined) return
    event.cancelled = true
    this.#timers.delete(handle.id)
  }

  /** A crash: every timer of the dead process is gone. */
  clearAll(): void {
    for (const event of this.#timers.values()) event.cancelled = true
    this.#timers.clear()
  }
}
