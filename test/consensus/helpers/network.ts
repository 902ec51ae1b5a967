// A tiny in-memory network of RaftCores for unit tests (etcd's raft_test.go `network` in
// spirit): it drives each core through ready/advance, "persists" into in-memory arrays,
// delivers messages in order, and can drop, cut, isolate and filter them. Everything is
// synchronous and deterministic, seeded by a small PRNG written here.
import { RaftCore } from '../../../consensus/raft-core.ts'
import { DEFAULT_RAFT_LIMITS, type RaftOptions } from '../../../consensus/raft-options.ts'
import type {
  Entry,
  EntryKind,
  HardState,
  Message,
  NodeId,
  Random,
  Ready,
  RestoredState,
  Snapshot,
} from '../../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../../consensus/types.ts'

/** Rounds of deliver-and-process before a network is declared not to settle. */
const SETTLE_ROUNDS_MAX = 10_000
/** Ready batches one node may produce in one processing pass. */
const READIES_PER_PASS_MAX = 1_000

/** mulberry32: small, fast, and good enough to spread election timeouts. */
export class SeededRandom implements Random {
  #state: number

  constructor(seed: number) {
    this.#state = seed >>> 0
  }

  nextInt(maxExclusive: number): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0
    let value = this.#state
    value = Math.imul(value ^ (value >>> 15), value | 1)
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61)
    const unit = ((value ^ (value >>> 14)) >>> 0) / 4294967296
    return Math.floor(unit * maxExclusive)
  }
}

/** A Random that always returns the same offset: election timeouts become exactly E + offset. */
export const fixedRandom = (offset: number): Random => ({ nextInt: () => offset })

export const ids = (...names: string[]): NodeId[] => names.map((name) => nodeId(name))

export const bootstrapSnapshot = (
  voters: readonly NodeId[],
  learners: NodeId[] = [],
): Snapshot => ({
  meta: { index: logIndex(0), term: term(0), membership: { voters: [...voters], learners } },
  data: new Uint8Array(0),
})

/** Entries 1..n with the given terms, as a log built by past leaders would hold them. */
export function entriesWithTerms(terms: readonly number[], firstIndex = 1): Entry[] {
  return terms.map((entryTerm, offset) => ({
    term: term(entryTerm),
    index: logIndex(firstIndex + offset),
    kind: 'command' as EntryKind,
    data: new TextEncoder().encode(`${firstIndex + offset}@${entryTerm}`),
  }))
}

/** A restored state with the bootstrap membership, the given log and hard state. */
export function restoredWith(
  voters: readonly NodeId[],
  entries: readonly Entry[],
  hardState: Partial<HardState> = {},
): RestoredState {
  return {
    snapshot: bootstrapSnapshot(voters),
    entries,
    hardState: {
      term: term(hardState.term ?? entries.at(-1)?.term ?? 0),
      vote: hardState.vote ?? null,
      commit: hardState.commit ?? logIndex(0),
    },
  }
}

/** A vote or preVote request from a candidate whose last entry is `lastLog` ([index, term]). */
export function voteRequest(
  type: 'preVote' | 'vote',
  from: string,
  to: string,
  requestTerm: number,
  lastLog: readonly [number, number] = [0, 0],
): Message {
  return {
    type,
    from: nodeId(from),
    to: nodeId(to),
    term: term(requestTerm),
    lastLogIndex: logIndex(lastLog[0]),
    lastLogTerm: term(lastLog[1]),
    transfer: null,
  }
}

/** The vote and preVote answers among `messages`: granted or not, in order. */
export const grants = (messages: readonly Message[]): boolean[] =>
  messages.flatMap((message) =>
    message.type === 'voteResponse' || message.type === 'preVoteResponse' ? [message.granted] : [],
  )

export const emptyRestored = (): RestoredState => ({
  snapshot: null,
  entries: [],
  hardState: { term: term(0), vote: null, commit: logIndex(0) },
})

export function testOptions(id: NodeId, overrides: Partial<RaftOptions> = {}): RaftOptions {
  return {
    ...DEFAULT_RAFT_LIMITS,
    electionTicks: 10,
    heartbeatTicks: 1,
    clockDriftBound: 0.1,
    id,
    canCampaign: true,
    random: new SeededRandom(id.length * 7919 + id.charCodeAt(0)),
    ...overrides,
  }
}

/** What a node has written to its "disk", applied the way storage/raft-storage.ts describes. */
export class MemoryStorage {
  hardState: HardState = { term: term(0), vote: null, commit: logIndex(0) }
  snapshot: Snapshot | null = null
  entries: Entry[] = []

  constructor(restored: RestoredState) {
    this.hardState = restored.hardState
    this.snapshot = restored.snapshot
    this.entries = [...restored.entries]
  }

  #termAt(index: number): number | null {
    const snapshotIndex = this.snapshot?.meta.index ?? 0
    if (index === snapshotIndex) return this.snapshot?.meta.term ?? 0
    return this.entries.find((entry) => entry.index === index)?.term ?? null
  }

  persist(ready: Ready): void {
    if (ready.snapshot !== null) {
      const { index, term: snapshotTerm } = ready.snapshot.meta
      const keep = this.#termAt(index) === snapshotTerm
      this.entries = keep ? this.entries.filter((entry) => entry.index > index) : []
      this.snapshot = ready.snapshot
    }
    if (ready.compaction !== null) {
      const index = ready.compaction.meta.index
      this.entries = this.entries.filter((entry) => entry.index > index)
      this.snapshot = ready.compaction
    }
    const first = ready.entries[0]
    if (first !== undefined) {
      this.entries = this.entries.filter((entry) => entry.index < first.index).concat(ready.entries)
    }
    if (ready.hardState !== null) this.hardState = ready.hardState
  }

  restored(): RestoredState {
    return { hardState: this.hardState, snapshot: this.snapshot, entries: [...this.entries] }
  }
}

export class TestNode {
  core: RaftCore
  readonly storage: MemoryStorage
  /** Every committed entry applied, in order; reset to the snapshot's point by an install. */
  applied: Entry[] = []
  appliedIndex = 0
  /** Every Ready this node produced, for tests of the Ready contract. */
  readonly readies: Ready[] = []

  constructor(
    readonly id: NodeId,
    readonly options: RaftOptions,
    restored: RestoredState,
  ) {
    this.storage = new MemoryStorage(restored)
    this.core = new RaftCore(options, restored)
    this.appliedIndex = restored.snapshot?.meta.index ?? 0
  }

  /** Persist, collect messages, apply, advance: one Ready. */
  handleReady(send: (message: Message) => void): void {
    const ready = this.core.ready()
    this.readies.push(ready)
    this.storage.persist(ready)
    for (const message of ready.messages) send(message)
    if (ready.snapshot !== null) {
      this.applied = []
      this.appliedIndex = ready.snapshot.meta.index
    }
    for (const entry of ready.committedEntries) {
      if (entry.index !== this.appliedIndex + 1)
        throw new Error(`${this.id} applied ${entry.index} after ${this.appliedIndex}`)
      this.applied.push(entry)
      this.appliedIndex = entry.index
    }
    this.core.advance(ready)
  }

  /** A crash and restart from what was persisted (everything is synced here). */
  restart(overrides: Partial<RaftOptions> = {}): void {
    const restored = this.storage.restored()
    this.core = new RaftCore({ ...this.options, ...overrides }, restored)
    this.applied = []
    this.appliedIndex = restored.snapshot?.meta.index ?? 0
  }

  commands(): string[] {
    return this.applied
      .filter((entry) => entry.kind === 'command')
      .map((entry) => new TextDecoder().decode(entry.data))
  }
}

export class Network {
  readonly nodes = new Map<NodeId, TestNode>()
  /** Every message the network accepted for delivery, in order (dropped ones excluded). */
  readonly sent: Message[] = []
  /** Return false to drop a message. */
  filter: ((message: Message, network: Network) => boolean) | null = null
  #queue: Message[] = []
  readonly #cuts = new Set<string>()
  readonly #isolated = new Set<NodeId>()

  /** A cluster of voters from the bootstrap snapshot; `overrides` may differ per node. */
  static create(
    names: readonly string[],
    overrides: (id: NodeId) => Partial<RaftOptions> = () => ({}),
  ): Network {
    const network = new Network()
    const voters = ids(...names)
    for (const id of voters) network.add(id, restoredWith(voters, []), overrides(id))
    return network
  }

  /**
   * A cluster whose nodes start with the given logs (terms of entries 1..n after the
   * bootstrap snapshot), in which `leader` is elected: it alone may campaign, and does so at
   * exactly E ticks, once every node's restart promise has run out.
   */
  static withLogs(
    logs: Readonly<Record<string, readonly number[]>>,
    leader: string,
    options: {
      term?: number
      commit?: number
      overrides?: (id: NodeId) => Partial<RaftOptions>
      filter?: (message: Message, network: Network) => boolean
    } = {},
  ): Network {
    const network = new Network()
    network.filter = options.filter ?? null
    const voters = ids(...Object.keys(logs))
    const highestTerm = Math.max(...Object.values(logs).map((terms) => terms.at(-1) ?? 0))
    for (const [name, terms] of Object.entries(logs)) {
      const id = nodeId(name)
      const restored = restoredWith(voters, entriesWithTerms(terms), {
        term: term(options.term ?? highestTerm),
        commit: logIndex(options.commit ?? 0),
      })
      const campaigning = name === leader ? { random: fixedRandom(0) } : { canCampaign: false }
      network.add(id, restored, { ...campaigning, ...options.overrides?.(id) })
    }
    const electionTicks = network.node(leader).options.electionTicks
    for (let tick = 0; tick < 2 * electionTicks && network.leaders().length === 0; tick++)
      network.tick()
    if (network.leaders()[0] !== leader) throw new Error(`${leader} was not elected`)
    return network
  }

  add(id: NodeId, restored: RestoredState, overrides: Partial<RaftOptions> = {}): TestNode {
    const node = new TestNode(id, testOptions(id, overrides), restored)
    this.nodes.set(id, node)
    return node
  }

  node(name: string): TestNode {
    const node = this.nodes.get(nodeId(name))
    if (node === undefined) throw new Error(`no node ${name}`)
    return node
  }

  core(name: string): RaftCore {
    return this.node(name).core
  }

  /** Sends what the nodes want sent, through cuts, isolation and the filter. */
  #send(message: Message): void {
    if (this.#isolated.has(message.from) || this.#isolated.has(message.to)) return
    if (this.#cuts.has(`${message.from}>${message.to}`)) return
    if (this.filter !== null && !this.filter(message, this)) return
    this.sent.push(message)
    this.#queue.push(message)
  }

  /** Runs every node's pending Ready batches. */
  processReadies(): void {
    for (const node of this.nodes.values()) {
      for (let pass = 0; node.core.hasReady(); pass++) {
        if (pass >= READIES_PER_PASS_MAX) throw new Error(`${node.id} never runs out of Ready`)
        node.handleReady((message) => this.#send(message))
      }
    }
  }

  /** Delivers messages (and the ones they cause) until none are left. */
  deliverAll(): void {
    for (let round = 0; round < SETTLE_ROUNDS_MAX; round++) {
      this.processReadies()
      if (this.#queue.length === 0) return
      const batch = this.#queue
      this.#queue = []
      this.stepOnly(batch)
    }
    throw new Error('the network did not settle')
  }

  /** Takes the queued messages without delivering them (to reorder, duplicate or inspect). */
  takeQueued(): Message[] {
    this.processReadies()
    const taken = this.#queue
    this.#queue = []
    return taken
  }

  /** Steps the given messages into their nodes, and only those. */
  stepOnly(messages: readonly Message[]): void {
    for (const message of messages) this.nodes.get(message.to)?.core.step(message)
  }

  /** Steps the given messages, then delivers everything they cause. */
  deliver(messages: readonly Message[]): void {
    this.stepOnly(messages)
    this.deliverAll()
  }

  /** Ticks every node `count` times, delivering everything after each tick. */
  tick(count = 1): void {
    for (let done = 0; done < count; done++) {
      for (const node of this.nodes.values()) node.core.tick()
      this.deliverAll()
    }
  }

  tickNode(name: string, count = 1): void {
    for (let done = 0; done < count; done++) {
      this.core(name).tick()
      this.deliverAll()
    }
  }

  /** The messages of a node's next Ready (none when it has none), taken and advanced past. */
  answersOf(name: string): Message[] {
    const core = this.core(name)
    if (!core.hasReady()) return []
    const ready = core.ready()
    core.advance(ready)
    return [...ready.messages]
  }

  /** Starts an election at `name` now and lets it run to its end. */
  campaign(name: string): void {
    this.core(name).campaign()
    this.deliverAll()
  }

  propose(name: string, text: string): void {
    const result = this.core(name).propose(new TextEncoder().encode(text))
    if (!result.ok) throw new Error(`proposal at ${name} refused: ${result.code}`)
    this.deliverAll()
  }

  /** Drops messages between two nodes, both ways. */
  cut(a: string, b: string): void {
    this.#cuts.add(`${a}>${b}`)
    this.#cuts.add(`${b}>${a}`)
  }

  isolate(name: string): void {
    this.#isolated.add(nodeId(name))
  }

  recover(): void {
    this.#cuts.clear()
    this.#isolated.clear()
    this.filter = null
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()]
      .filter((node) => node.core.softState().role === 'leader')
      .map((node) => node.id)
  }

  /** Messages sent so far of one type, optionally from one node. */
  sentOf<T extends Message['type']>(type: T, from?: string): (Message & { type: T })[] {
    return this.sent.filter(
      (message): message is Message & { type: T } =>
        message.type === type && (from === undefined || message.from === from),
    )
  }
}
