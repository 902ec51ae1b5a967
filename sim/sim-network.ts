// The simulated network: every message is delayed by its link's latency distribution,
// may be lost, duplicated or overtaken by a later one, and is dropped on a cut link —
// at send time and again at delivery, so a partition also cuts what is on the wire.
import type { Message, NodeId } from '../consensus/types.ts'
import type { EventQueue } from './event-queue.ts'
import type { SeededRandom } from './seeded-random.ts'

export interface LinkProfile {
  readonly latencyMsMin: number
  readonly latencyMsMax: number
  /** A share of messages is held much longer (a retransmission, a queue): reordering. */
  readonly tailProbability: number
  readonly tailMsMax: number
}

export const LAN_LINK: LinkProfile = {
  latencyMsMin: 0.1,
  latencyMsMax: 2,
  tailProbability: 0.01,
  tailMsMax: 40,
}
export const WAN_LINK: LinkProfile = {
  latencyMsMin: 15,
  latencyMsMax: 60,
  tailProbability: 0.02,
  tailMsMax: 300,
}

export interface NetworkFaults {
  readonly lossProbability: number
  readonly duplicateProbability: number
}

export interface NetworkCounters {
  sent: number
  delivered: number
  lost: number
  duplicated: number
  cut: number
}

export class SimNetwork {
  readonly #queue: EventQueue
  readonly #random: SeededRandom
  readonly #siteOf: (node: NodeId) => number
  readonly #deliver: (message: Message) => void
  /** Directed cuts, "from>to". */
  readonly #cut = new Set<string>()
  faults: NetworkFaults
  /** A scripted scenario's hook (etcd's test network has one): return false to drop a message. */
  filter: ((message: Message) => boolean) | null = null
  readonly counters: NetworkCounters = { sent: 0, delivered: 0, lost: 0, duplicated: 0, cut: 0 }
  /** Extra delay multiplier for messages to a slow node. */
  readonly slowFactor = new Map<NodeId, number>()
  /** Clogged directed links ("from>to"): until when, and the longest extra hold of a message. */
  readonly #clogged = new Map<string, { untilMs: number; holdMsMax: number }>()

  constructor(
    queue: EventQueue,
    random: SeededRandom,
    faults: NetworkFaults,
    siteOf: (node: NodeId) => number,
    deliver: (message: Message) => void,
  ) {
    this.#queue = queue
    this.#random = random
    this.faults = faults
    this.#siteOf = siteOf
    this.#deliver = deliver
  }

  send(message: Message): void {
    this.counters.sent++
    if (this.isCut(message.from, message.to) || this.filter?.(message) === false) {
      this.counters.cut++
      return
    }
    if (this.#random.chance(this.faults.lossProbability)) {
      this.counters.lost++
      return
    }
    this.#schedule(message)
    if (this.#random.chance(this.faults.duplicateProbability)) {
      this.counters.duplicated++
      this.#schedule(message)
    }
  }

  isCut(from: NodeId, to: NodeId): boolean {
    return this.#cut.has(`${from}>${to}`)
  }

  cut(from: NodeId, to: NodeId): void {
    this.#cut.add(`${from}>${to}`)
  }

  uncut(from: NodeId, to: NodeId): void {
    this.#cut.delete(`${from}>${to}`)
  }

  cutBoth(a: NodeId, b: NodeId): void {
    this.cut(a, b)
    this.cut(b, a)
  }

  /** A clogged path (TigerBeetle's packet simulator): messages sent on it before `untilMs` are held up to `holdMsMax` longer, so they arrive long after later ones. */
  clog(from: NodeId, to: NodeId, untilMs: number, holdMsMax: number): void {
    this.#clogged.set(`${from}>${to}`, { untilMs, holdMsMax })
  }

  healAll(): void {
    this.#cut.clear()
    this.#clogged.clear()
  }

  get partitioned(): boolean {
    return this.#cut.size > 0
  }

  describeCuts(): string {
    return [...this.#cut].sort().join(' ')
  }

  #schedule(message: Message): void {
    const profile = this.#siteOf(message.from) === this.#siteOf(message.to) ? LAN_LINK : WAN_LINK
    let latencyMs =
      profile.latencyMsMin + this.#random.float() * (profile.latencyMsMax - profile.latencyMsMin)
    if (this.#random.chance(profile.tailProbability))
      latencyMs += this.#random.float() * profile.tailMsMax
    latencyMs *= this.slowFactor.get(message.to) ?? 1
    const clog = this.#clogged.get(`${message.from}>${message.to}`)
    if (clog !== undefined && clog.untilMs > this.#queue.nowMs)
      latencyMs += this.#random.float() * clog.holdMsMax
    this.#queue.schedule(this.#queue.nowMs + latencyMs, () => {
      if (this.isCut(message.from, message.to)) {
        this.counters.cut++
        return
      }
      this.counters.delivered++
      this.#deliver(message)
    })
  }
}
