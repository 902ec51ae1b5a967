// Keeps connections to a set of targets: every target that is not connected is dialled,
// and dialled again with exponential backoff while it stays unreachable. libp2p's own
// reconnect queue gives up after a few tries, and a cluster peer that is down for an hour
// must still be found again when it returns.
import { assert } from '../../consensus/assert.ts'

export const REDIAL_BACKOFF_MS_MIN = 250
export const REDIAL_BACKOFF_MS_MAX = 10_000
/** How often targets are looked over; a disconnect also triggers a look at once. */
export const REDIAL_CHECK_INTERVAL_MS = 500
export const REDIAL_TARGETS_MAX = 1024
export const REDIALS_IN_FLIGHT_MAX = 16

export interface RedialTarget {
  /** Names the target: a peer id, or a bootstrap address whose peer id may be unknown. */
  readonly key: string
  /** The peer id, once known (connection checks need it). */
  peerId: string | null
}

export interface RedialerOptions {
  readonly isConnected: (peerId: string) => boolean
  /** Dials the target; resolves with the remote peer id. */
  readonly dial: (target: RedialTarget, signal: AbortSignal) => Promise<string>
  readonly log: (line: string) => void
}

interface TargetState {
  readonly target: RedialTarget
  backoffMs: number
  nextAttemptMs: number
  dialing: boolean
  /** Set after the first failure, so that an unreachable target is logged once, not per try. */
  reportedUnreachable: boolean
}

export class Redialer {
  readonly #options: RedialerOptions
  readonly #targets = new Map<string, TargetState>()
  readonly #abort = new AbortController()
  #timer: NodeJS.Timeout | null = null
  #dialsInFlight = 0

  constructor(options: RedialerOptions) {
    this.#options = options
  }

  start(): void {
    assert(!this.#abort.signal.aborted, 'a stopped redialer cannot start again')
    this.#timer = setInterval(() => this.check(), REDIAL_CHECK_INTERVAL_MS)
    this.#timer.unref()
  }

  stop(): void {
    this.#abort.abort()
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  /** Replaces the targets of one group (keys are prefixed by group), keeping the backoff of those that stay. */
  setGroup(group: string, targets: readonly RedialTarget[]): void {
    const prefix = `${group}:`
    const wanted = new Map(targets.map((target) => [prefix + target.key, target]))
    for (const key of this.#targets.keys())
      if (key.startsWith(prefix) && !wanted.has(key)) this.#targets.delete(key)
    for (const [key, target] of wanted) {
      const existing = this.#targets.get(key)
      if (existing !== undefined) {
        existing.target.peerId ??= target.peerId
        continue
      }
      if (this.#targets.size >= REDIAL_TARGETS_MAX) {
        this.#options.log(
          `not keeping a connection to ${target.key}: ${REDIAL_TARGETS_MAX} targets already`,
        )
        continue
      }
      this.#targets.set(key, {
        target,
        backoffMs: REDIAL_BACKOFF_MS_MIN,
        nextAttemptMs: 0,
        dialing: false,
        reportedUnreachable: false,
      })
    }
    this.check()
  }

  /** A peer went away: dial it again at the next check instead of after its backoff. */
  peerDisconnected(peerId: string): void {
    for (const state of this.#targets.values())
      if (state.target.peerId === peerId) state.nextAttemptMs = 0
    queueMicrotask(() => this.check())
  }

  check(): void {
    if (this.#abort.signal.aborted) return
    const nowMs = Date.now()
    for (const state of this.#targets.values()) {
      if (this.#dialsInFlight >= REDIALS_IN_FLIGHT_MAX) return
      const { peerId } = state.target
      if (peerId !== null && this.#options.isConnected(peerId)) {
        state.backoffMs = REDIAL_BACKOFF_MS_MIN
        continue
      }
      if (state.dialing || nowMs < state.nextAttemptMs) continue
      void this.#dial(state)
    }
  }

  async #dial(state: TargetState): Promise<void> {
    state.dialing = true
    this.#dialsInFlight++
    try {
      state.target.peerId = await this.#options.dial(state.target, this.#abort.signal)
      state.backoffMs = REDIAL_BACKOFF_MS_MIN
      state.nextAttemptMs = 0
      if (state.reportedUnreachable) this.#options.log(`reached ${state.target.key} again`)
      state.reportedUnreachable = false
    } catch (error) {
      if (this.#abort.signal.aborted) return
      if (!state.reportedUnreachable)
        this.#options.log(`cannot reach ${state.target.key}, retrying: ${(error as Error).message}`)
      state.reportedUnreachable = true
      // Jitter, so that peers restarted together do not dial each other in lockstep.
      state.nextAttemptMs = Date.now() + state.backoffMs * (0.8 + 0.4 * Math.random())
      state.backoffMs = Math.min(state.backoffMs * 2, REDIAL_BACKOFF_MS_MAX)
    } finally {
      state.dialing = false
      this.#dialsInFlight--
    }
  }
}
