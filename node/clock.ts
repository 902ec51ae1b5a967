// Time as the driver sees it. The real node uses the system clock; the simulator gives
// every node its own drifting clock over virtual time (sim/sim-clock.ts).

export interface TimerHandle {
  readonly id: number
}

export interface Clock {
  /** Milliseconds on this node's clock; only differences are meaningful. */
  nowMs(): number
  setTimer(delayMs: number, callback: () => void): TimerHandle
  clearTimer(handle: TimerHandle): void
}

/** The real clock: monotonic (performance.now), so wall-clock steps cannot break leases. */
export class SystemClock implements Clock {
  readonly #timers = new Map<number, NodeJS.Timeout>()
  #nextId = 1

  nowMs(): number {
    return performance.now()
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const id = this.#nextId++
    const timer = setTimeout(() => {
      this.#timers.delete(id)
      callback()
    }, delayMs)
    this.#timers.set(id, timer)
    return { id }
  }

  clearTimer(handle: TimerHandle): void {
    const timer = this.#timers.get(handle.id)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#timers.delete(handle.id)
  }
}
