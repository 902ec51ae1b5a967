// A simulated cluster: nodes running the real RaftDriver and RaftCore over a simulated
// network, disks and drifting clocks, all on one virtual time line, with the invariant
// checker told of every persist, apply and role change and run after every event.
import type { Message, NodeId, PlantedBug, Snapshot, SoftState } from '../consensus/types.ts'
import { logIndex, nodeId, term } from '../consensus/types.ts'
import { DEFAULT_RAFT_LIMITS } from '../consensus/raft-core.ts'
import { assert } from '../consensus/assert.ts'
import { RaftDriver } from '../node/raft-driver.ts'
import { EventQueue } from './event-queue.ts'
import { InvariantChecker } from './invariant-checker.ts'
import { SeededRandom } from './seeded-random.ts'
import { SimClock } from './sim-clock.ts'
import { SimDisk, type DiskLatency } from './sim-disk.ts'
import { SimNetwork, type NetworkFaults } from './sim-network.ts'
import { SimStateMachine, encodeMachineState } from './sim-state-machine.ts'
import { Trace } from './trace.ts'

export interface ClusterOptions {
  readonly nodeCount: number
  /** Nodes that may campaign (the Primary and the Secondary in the product). */
  readonly campaignerCount: number
  readonly siteCount: number
  readonly clockDriftBound: number
  readonly tickMs: number
  readonly electionTicks: number
  readonly heartbeatTicks: number
  readonly snapshotEntriesMin: number
  readonly maxEntriesPerAppend: number
  readonly maxInflightAppends: number
  readonly diskLatency: DiskLatency
  readonly networkFaults: NetworkFaults
  readonly plantedBug: PlantedBug | null
  readonly keepFullTrace: boolean
}

const TRACE_RECENT_LINES = 60

export class SimNode {
  driver: RaftDriver | null = null
  machine: SimStateMachine | null = null
  constructor(
    readonly id: NodeId,
    readonly site: number,
    readonly canCampaign: boolean,
    readonly clock: SimClock,
    readonly disk: SimDisk,
  ) {}

  get up(): boolean {
    return this.driver !== null
  }
}

function describeMessage(message: Message): string {
  const head = `${message.from}>${message.to} ${message.type} t${message.term}`
  switch (message.type) {
    case 'append':
      return `${head} prev=${message.prevLogIndex}/${message.prevLogTerm} n=${message.entries.length} c=${message.commit}`
    case 'appendResponse':
      return `${head} ${message.success ? 'ok' : 'reject'} i=${message.index} hint=${message.hintIndex}/${message.hintTerm}`
    case 'preVote':
    case 'vote':
      return `${head} last=${message.lastLogIndex}/${message.lastLogTerm}${message.transfer ? ' transfer' : ''}`
    case 'preVoteResponse':
    case 'voteResponse':
      return `${head} ${message.granted ? 'granted' : 'refused'}`
    case 'heartbeat':
      return `${head} c=${message.commit}`
    case 'snapshot':
      return `${head} i=${message.snapshot.meta.index}`
    case 'heartbeatResponse':
    case 'timeoutNow':
      return head
  }
}

export class SimCluster {
  readonly queue = new EventQueue()
  readonly options: ClusterOptions
  readonly checker: InvariantChecker
  readonly network: SimNetwork
  readonly trace: Trace
  readonly nodes = new Map<NodeId, SimNode>()
  readonly #coreRandom: SeededRandom
  readonly #bootstrap: Snapshot
  events = 0
  /** Told when a node becomes leader, after the checker (the scenario may strike it then). */
  onLeaderElected: ((node: SimNode) => void) | null = null

  constructor(seed: number, options: ClusterOptions) {
    assert(
      options.campaignerCount >= 1 && options.campaignerCount <= options.nodeCount,
      'campaigners within the cluster',
    )
    this.options = options
    const random = new SeededRandom(seed)
    const clockRandom = random.fork()
    const diskRandom = random.fork()
    this.#coreRandom = random.fork()
    this.checker = new InvariantChecker(() => this.queue.nowMs)
    this.trace = new Trace({ recentMax: TRACE_RECENT_LINES, keepAll: options.keepFullTrace })
    const ids = Array.from({ length: options.nodeCount }, (_, index) => nodeId(`n${index + 1}`))
    this.network = new SimNetwork(
      this.queue,
      random.fork(),
      options.networkFaults,
      (id) => this.nodes.get(id)?.site ?? 0,
      (message) => this.#deliver(message),
    )
    this.#bootstrap = {
      meta: { index: logIndex(0), term: term(0), membership: { voters: ids, learners: [] } },
      data: encodeMachineState(0, 0),
    }
    ids.forEach((id, index) => {
      const drift = options.clockDriftBound * (clockRandom.float() * 2 - 1)
      const clock = new SimClock(this.queue, 1 + drift, clockRandom.between(0, 1_000_000))
      const disk = new SimDisk(this.queue, diskRandom.fork(), options.diskLatency)
      disk.bootstrap(this.#bootstrap)
      disk.observer = (batch, previousTerm) => {
        this.trace.add(
          this.queue.nowMs,
          `${id} persisted ${batch.entries.length} entries${batch.hardState ? ` hs=${batch.hardState.term}/${batch.hardState.vote ?? '-'}/${batch.hardState.commit}` : ''}`,
        )
        this.checker.onPersist(id, batch, previousTerm)
      }
      const site = index % options.siteCount
      this.nodes.set(id, new SimNode(id, site, index < options.campaignerCount, clock, disk))
    })
    for (const node of this.nodes.values()) this.start(node)
  }

  get nowMs(): number {
    return this.queue.nowMs
  }

  node(id: NodeId): SimNode {
    const node = this.nodes.get(id)
    assert(node !== undefined, `no node ${id}`)
    return node
  }

  start(node: SimNode): void {
    assert(!node.up, `${node.id} is already up`)
    const machine = new SimStateMachine({
      onApply: (entry, chain, before) =>
        this.checker.onApply(node.id, entry, chain, before, node.driver!.core.hardState().term),
      onRestore: (metaIndex, stateIndex, chain) =>
        this.checker.onRestore(node.id, metaIndex, stateIndex, chain),
    })
    node.machine = machine
    const options = this.options
    const driver = new RaftDriver({
      raft: {
        ...DEFAULT_RAFT_LIMITS,
        id: node.id,
        electionTicks: options.electionTicks,
        heartbeatTicks: options.heartbeatTicks,
        maxEntriesPerAppend: options.maxEntriesPerAppend,
        maxInflightAppends: options.maxInflightAppends,
        clockDriftBound: options.clockDriftBound,
        canCampaign: node.canCampaign,
        random: this.#coreRandom.fork(),
        ...(options.plantedBug === null ? {} : { plantedBug: options.plantedBug }),
      },
      restored: node.disk.load(),
      tickMs: options.tickMs,
      snapshotEntriesMin: options.snapshotEntriesMin,
      storage: node.disk,
      transport: { send: (message) => this.network.send(message) },
      clock: node.clock,
      stateMachine: machine,
      onSoftStateChange: (state) => this.#onSoftState(node, state),
      onFatal: (error) =>
        this.checker.violations.push({
          invariant: 'Storage',
          detail: error.message,
          atMs: this.nowMs,
        }),
    })
    node.driver = driver
    driver.start()
    this.trace.add(this.nowMs, `${node.id} started term=${driver.core.hardState().term}`)
  }

  crash(node: SimNode): void {
    assert(node.up, `${node.id} is already down`)
    node.driver!.stop()
    node.driver = null
    node.machine = null
    node.clock.clearAll()
    node.disk.crash()
    this.trace.add(this.nowMs, `${node.id} crashed`)
  }

  /** Runs every event due up to `untilMs`, checking the invariants after each; stops at the first violation. */
  runUntil(untilMs: number): void {
    while (this.checker.violations.length === 0 && this.queue.runNext(untilMs)) {
      this.events++
      this.#checkLeases()
    }
    if (this.checker.violations.length === 0)
      this.queue.advanceTo(Math.max(untilMs, this.queue.nowMs))
  }

  /** The up node that leads in the highest term, if any. */
  leader(): SimNode | null {
    let best: SimNode | null = null
    for (const node of this.nodes.values()) {
      const state = node.driver?.core.softState()
      if (state?.role !== 'leader') continue
      if (best === null || state.term > best.driver!.core.softState().term) best = node
    }
    return best
  }

  upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((node) => node.up)
  }

  #deliver(message: Message): void {
    const node = this.nodes.get(message.to)
    if (node?.driver == null) return
    this.trace.add(this.nowMs, describeMessage(message))
    node.driver.receive(message)
  }

  #onSoftState(node: SimNode, state: SoftState): void {
    this.trace.add(
      this.nowMs,
      `${node.id} is ${state.role} term=${state.term} leader=${state.leader ?? '-'}`,
    )
    if (state.role !== 'leader') return
    this.checker.onLeader(node.id, state.term, node.driver!.core)
    this.onLeaderElected?.(node)
  }

  #checkLeases(): void {
    const holders = []
    for (const node of this.nodes.values()) {
      const untilMs = node.driver?.leaseExpiresAtMs()
      if (untilMs == null) continue
      holders.push({ node: node.id, untilGlobalMs: node.clock.toGlobalMs(untilMs) })
    }
    if (holders.length > 1) this.checker.checkLeases(holders)
  }
}
