// The two concurrency primitives of the chunk store. A SerialQueue runs tasks one after
// another (writes to a pack must not interleave); a ReadGate lets any number of reads run
// together and lets a writer wait until none is running and hold new ones back, so that
// a pack file is never deleted under a read that has just looked up its location.

export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve()

  /** Runs `task` once every task queued before it has settled. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task)
    this.tail = result.catch(() => undefined)
    return result
  }
}

export class ReadGate {
  private active = 0
  private drained: (() => void) | null = null
  private closed: Promise<void> | null = null

  /** Runs a read, after any exclusive section in progress has ended. */
  async read<T>(task: () => Promise<T>): Promise<T> {
    while (this.closed !== null) await this.closed
    this.active++
    try {
      return await task()
    } finally {
      this.active--
      if (this.active === 0) this.drained?.()
    }
  }

  /** Waits until no read runs, then runs `task` while new reads wait. */
  async exclusive<T>(task: () => Promise<T>): Promise<T> {
    while (this.closed !== null) await this.closed
    let reopen = (): void => {}
    this.closed = new Promise<void>((resolve) => (reopen = resolve))
    try {
      if (this.active > 0) await new Promise<void>((resolve) => (this.drained = resolve))
      return await task()
    } finally {
      this.drained = null
      this.closed = null
      reopen()
    }
  }
}
