// The default chaos scenario, after TigerBeetle's VOPR: one seed picks the cluster's shape
// and every fault rate ("swarm testing"), then a safety phase injects faults while clients
// propose, change membership and transfer leadership, and a liveness phase heals every
// fault and requires a leader and fresh commits on every member within a stated bound.
import type { ConfigChange, NodeId, PlantedBug } from '../consensus/types.ts'
import { SeededRandom } from './seeded-random.ts'
import { SimCluster, type ClusterOptions, type SimNode } from './sim-cluster.ts'
import type { Violation } from './invariant-checker.ts'

export interface FaultSwitches {
  readonly partitions: boolean
  readonly crashes: boolean
  readonly loss: boolean
  readonly duplication: boolean
  readonly slowNodes: boolean
  readonly clockDrift: boolean
  readonly wan: boolean
  readonly membership: boolean
  readonly transfers: boolean
}

export const ALL_FAULTS: FaultSwitches = {
  partitions: true,
  crashes: true,
  loss: true,
  duplication: true,
  slowNodes: true,
  clockDrift: true,
  wan: true,
  membership: true,
  transfers: true,
}

export interface ScenarioOptions {
  readonly seed: number
  readonly nodeCount: number
  readonly steps: number
  readonly faults: FaultSwitches
  readonly plantedBug: PlantedBug | null
  readonly keepFullTrace: boolean
  /** Fixed action weights in place of the seed's choice (a focused search, e.g. for a planted bug). */
  readonly actionWeights?: Partial<Record<Action, number>>
  readonly newLeaderCrashProbability?: number
}

export interface SeedResult {
  readonly seed: number
  readonly swarm: string
  readonly violations: readonly Violation[]
  readonly events: number
  readonly simulatedMs: number
  readonly proposalsCommitted: number
  readonly leaderChanges: number
  readonly traceDigest: number
  readonly recentTrace: readonly string[]
  readonly fullTrace: readonly string[]
}

const TICK_MS = 50
const ELECTION_TICKS = 10
const HEARTBEAT_TICKS = 2
/** After the last fault heals, a leader must commit fresh proposals on every member within this. */
export const LIVENESS_BOUND_MS = 40 * ELECTION_TICKS * TICK_MS
const LIVENESS_PROPOSALS = 3
const STEP_MS_MAX = 400
/** Membership changes never shrink the voters below this, so most faults leave a quorum. */
const VOTERS_MIN = 3

export type Action =
  | 'propose'
  | 'partition'
  | 'heal'
  | 'clog'
  | 'crash'
  | 'crashLeader'
  | 'bounce'
  | 'restart'
  | 'slow'
  | 'membership'
  | 'transfer'

const CLOG_MS_MAX = 5_000
const CLOG_HOLD_MS_MAX = 3_000

interface Swarm {
  readonly cluster: ClusterOptions
  readonly weights: ReadonlyMap<Action, number>
  /** The chance that a newly elected leader crashes moments later (before its first entries spread). */
  readonly newLeaderCrashProbability: number
}

const SWARM_LEAVE_OUT_PROBABILITY = 1 / 3
const NEW_LEADER_CRASH_MS_MAX = 150
const NEW_LEADER_DOWN_MS_MAX = 2_000

function chooseSwarm(random: SeededRandom, options: ScenarioOptions): Swarm {
  const { faults } = options
  const cluster: ClusterOptions = {
    nodeCount: options.nodeCount,
    campaignerCount: random.between(Math.min(2, options.nodeCount), options.nodeCount),
    siteCount: faults.wan ? random.between(1, 3) : 1,
    clockDriftBound: faults.clockDrift ? random.pick([0.01, 0.05, 0.1]) : 0,
    tickMs: TICK_MS,
    electionTicks: ELECTION_TICKS,
    heartbeatTicks: random.pick([1, HEARTBEAT_TICKS, 4]),
    snapshotEntriesMin: random.pick([5, 20, 100]),
    // Small batches and windows open paths that large ones hide (Figure 8 needs an append
    // that carries an old entry without the new leader's noop).
    maxEntriesPerAppend: random.pick([1, 3, 256]),
    maxInflightAppends: random.pick([1, 4, 64]),
    diskLatency: {
      writeMsMin: 0,
      writeMsMax: random.pick([1, 5]),
      syncMsMin: 1,
      syncMsMax: random.pick([3, 10, 30]),
    },
    networkFaults: {
      lossProbability: faults.loss ? random.pick([0, 0.01, 0.05, 0.2]) : 0,
      duplicateProbability: faults.duplication ? random.pick([0, 0.01, 0.05]) : 0,
    },
    plantedBug: options.plantedBug,
    keepFullTrace: options.keepFullTrace,
  }
  // Swarm testing: each kind of fault is left out of a third of the runs, because a mix of
  // everything hides bugs that only a few faults in concert reveal.
  const weight = (enabled: boolean, choices: number[]): number =>
    enabled && !random.chance(SWARM_LEAVE_OUT_PROBABILITY) ? random.pick(choices) : 0
  const weights = new Map<Action, number>([
    // The topology log is idle most of the time: some runs propose rarely.
    ['propose', random.pick([1, 3, 10])],
    ['partition', weight(faults.partitions, [0, 1, 3])],
    ['heal', weight(faults.partitions, [1, 3])],
    ['clog', weight(faults.partitions, [0, 1, 2])],
    ['crash', weight(faults.crashes, [0, 1, 2])],
    ['crashLeader', weight(faults.crashes, [0, 1])],
    ['bounce', weight(faults.crashes, [0, 1, 3])],
    ['restart', weight(faults.crashes, [2, 4])],
    ['slow', weight(faults.slowNodes, [0, 1])],
    ['membership', weight(faults.membership, [0, 1, 2])],
    ['transfer', weight(faults.transfers, [0, 1, 2])],
  ])
  for (const [action, fixed] of Object.entries(options.actionWeights ?? {}))
    weights.set(action as Action, fixed)
  const newLeaderCrashProbability =
    options.newLeaderCrashProbability ?? (faults.crashes ? random.pick([0, 0, 0.1, 0.3]) : 0)
  return { cluster, weights, newLeaderCrashProbability }
}

function describeSwarm(swarm: Swarm): string {
  const c = swarm.cluster
  const actions = [...swarm.weights].map(([action, weight]) => `${action}=${weight}`).join(',')
  return (
    `nodes=${c.nodeCount} campaigners=${c.campaignerCount} sites=${c.siteCount} drift=${c.clockDriftBound} ` +
    `loss=${c.networkFaults.lossProbability} dup=${c.networkFaults.duplicateProbability} ` +
    `sync=${c.diskLatency.syncMsMax}ms snapshotEvery=${c.snapshotEntriesMin} batch=${c.maxEntriesPerAppend} ` +
    `inflight=${c.maxInflightAppends} heartbeat=${c.heartbeatTicks} newLeaderCrash=${swarm.newLeaderCrashProbability} ${actions}`
  )
}

function pickAction(random: SeededRandom, weights: ReadonlyMap<Action, number>): Action {
  let total = 0
  for (const weight of weights.values()) total += weight
  let draw = random.nextInt(total)
  for (const [action, weight] of weights) {
    if (draw < weight) return action
    draw -= weight
  }
  return 'propose'
}

export class ChaosRun {
  readonly cluster: SimCluster
  readonly #random: SeededRandom
  readonly #swarm: Swarm
  readonly #options: ScenarioOptions
  readonly #encoder = new TextEncoder()
  #proposalCount = 0
  #liveness = false
  proposalsCommitted = 0

  constructor(options: ScenarioOptions) {
    this.#options = options
    const random = new SeededRandom(options.seed)
    this.#swarm = chooseSwarm(random.fork(), options)
    this.#random = random.fork()
    this.cluster = new SimCluster(options.seed, this.#swarm.cluster)
    this.cluster.onLeaderElected = (node) => this.#maybeStrikeNewLeader(node)
  }

  #maybeStrikeNewLeader(node: SimNode): void {
    if (this.#liveness || !this.#random.chance(this.#swarm.newLeaderCrashProbability)) return
    const queue = this.cluster.queue
    queue.schedule(queue.nowMs + this.#random.between(1, NEW_LEADER_CRASH_MS_MAX), () => {
      if (!node.up || this.#liveness) return
      this.cluster.crash(node)
      queue.schedule(queue.nowMs + this.#random.between(1, NEW_LEADER_DOWN_MS_MAX), () => {
        if (!node.up) this.cluster.start(node)
      })
    })
  }

  run(): SeedResult {
    try {
      for (let step = 0; step < this.#options.steps && !this.#failed(); step++) {
        this.cluster.runUntil(this.cluster.nowMs + this.#random.between(1, STEP_MS_MAX))
        if (!this.#failed()) this.#act(pickAction(this.#random, this.#swarm.weights))
      }
      if (!this.#failed()) this.#checkLiveness()
    } catch (error) {
      // An assertion in the core, the driver or the simulator: a bug, reported with its seed.
      const where = (error as Error).stack?.split('\n')[1] ?? ''
      this.cluster.checker.violations.push({
        invariant: 'Assertion',
        detail: `${(error as Error).message} ${where.trim()}`,
        atMs: this.cluster.nowMs,
      })
    }
    return this.#result()
  }

  #failed(): boolean {
    return this.cluster.checker.violations.length > 0
  }

  #note(line: string): void {
    this.cluster.trace.add(this.cluster.nowMs, `-- ${line}`)
  }

  #act(action: Action): void {
    switch (action) {
      case 'propose':
        return this.#propose()
      case 'partition':
        return this.#partition()
      case 'heal':
        this.#note('heal network')
        return this.cluster.network.healAll()
      case 'clog':
        return this.#clog()
      case 'crash':
        return this.#crash()
      case 'crashLeader': {
        const leader = this.cluster.leader()
        return leader === null ? undefined : this.cluster.crash(leader)
      }
      case 'bounce':
        return this.#bounce()
      case 'restart':
        return this.#restart()
      case 'slow':
        return this.#toggleSlow()
      case 'membership':
        return this.#changeMembership()
      case 'transfer':
        return this.#transfer()
    }
  }

  #propose(onCommitted?: (index: number) => void): void {
    const up = this.cluster.upNodes()
    const leader = this.cluster.leader() ?? (up.length > 0 ? this.#random.pick(up) : null)
    if (leader?.driver == null) return
    const data = this.#encoder.encode(`p${this.#proposalCount++}`)
    leader.driver.propose(data, (outcome) => {
      if (!outcome.ok) return
      this.proposalsCommitted++
      onCommitted?.(outcome.index)
    })
  }

  #partition(): void {
    const network = this.cluster.network
    const ids = [...this.cluster.nodes.keys()]
    const mode = this.#random.pick([
      'isolateLeader',
      'isolateSingle',
      'split',
      'asymmetric',
      'leaderOneWay',
      'bridge',
    ] as const)
    const leader = this.cluster.leader()?.id ?? this.#random.pick(ids)
    network.healAll()
    if (mode === 'isolateLeader' || mode === 'isolateSingle') {
      const isolated = mode === 'isolateLeader' ? leader : this.#random.pick(ids)
      for (const other of ids) if (other !== isolated) network.cutBoth(isolated, other)
    } else if (mode === 'asymmetric') {
      const from = this.#random.pick(ids)
      for (const other of ids)
        if (other !== from && this.#random.chance(0.6)) network.cut(from, other)
    } else if (mode === 'leaderOneWay') {
      // A minority stops hearing the leader, which keeps its quorum and its lease: the
      // minority's campaigns must not win while that lease holds.
      const others = this.#random.shuffle(ids.filter((id) => id !== leader))
      const deaf = others.slice(
        0,
        this.#random.between(1, Math.max(1, Math.floor(others.length / 2))),
      )
      for (const id of deaf) network.cut(leader, id)
    } else {
      const shuffled = this.#random.shuffle(ids)
      const bridge = mode === 'bridge' ? shuffled.pop()! : null
      const split = this.#random.between(1, shuffled.length - 1)
      const sideA = shuffled.slice(0, split)
      const sideB = shuffled.slice(split)
      for (const a of sideA) for (const b of sideB) network.cutBoth(a, b)
      if (bridge !== null) this.#note(`bridge ${bridge}`)
    }
    this.#note(`partition ${mode}: ${network.describeCuts()}`)
  }

  #clog(): void {
    const ids = [...this.cluster.nodes.keys()]
    const from = this.#random.pick(ids)
    const to = this.#random.pick(ids.filter((id) => id !== from))
    const untilMs = this.cluster.nowMs + this.#random.between(100, CLOG_MS_MAX)
    this.cluster.network.clog(from, to, untilMs, CLOG_HOLD_MS_MAX)
    this.#note(`clog ${from}>${to} until ${untilMs.toFixed(0)} ms`)
  }

  #crash(): void {
    const up = this.cluster.upNodes()
    if (up.length === 0) return
    this.cluster.crash(this.#random.pick(up))
  }

  /** A crash and a quick restart, as a supervisor would do: the node comes back within an election timeout. */
  #bounce(): void {
    const up = this.cluster.upNodes()
    if (up.length === 0) return
    const node = this.#random.pick(up)
    this.cluster.crash(node)
    this.cluster.queue.schedule(
      this.cluster.nowMs + this.#random.between(1, TICK_MS * ELECTION_TICKS),
      () => {
        if (!node.up) this.cluster.start(node)
      },
    )
  }

  #restart(): void {
    const down = [...this.cluster.nodes.values()].filter((node) => !node.up)
    if (down.length === 0) return
    this.cluster.start(this.#random.pick(down))
  }

  #toggleSlow(): void {
    const node = this.#random.pick([...this.cluster.nodes.values()])
    const slow = node.disk.slowFactor === 1
    this.#setSlow(node, slow)
    this.#note(`${node.id} ${slow ? 'slow' : 'normal speed'}`)
  }

  #setSlow(node: SimNode, slow: boolean): void {
    node.disk.slowFactor = slow ? 10 : 1
    if (slow) this.cluster.network.slowFactor.set(node.id, 5)
    else this.cluster.network.slowFactor.delete(node.id)
  }

  #changeMembership(): void {
    const leader = this.cluster.leader()
    if (leader?.driver == null) return
    const membership = leader.driver.core.membership()
    const changeable = [...this.cluster.nodes.values()]
      .filter((node) => !node.canCampaign)
      .map((node) => node.id)
    const voters = new Set(membership.voters)
    const learners = new Set(membership.learners)
    const choices: ConfigChange[] = []
    for (const id of changeable) {
      if (voters.has(id) && voters.size > VOTERS_MIN) {
        choices.push({ type: 'addLearner', node: id }, { type: 'remove', node: id })
      } else if (learners.has(id)) {
        choices.push({ type: 'addVoter', node: id }, { type: 'remove', node: id })
      } else if (!voters.has(id)) {
        choices.push({ type: 'addLearner', node: id })
      }
    }
    if (choices.length === 0) return
    const change = this.#random.pick(choices)
    this.#note(`propose ${change.type} ${change.node} at ${leader.id}`)
    leader.driver.proposeConfigChange(change, () => {})
  }

  #transfer(): void {
    const leader = this.cluster.leader()
    if (leader?.driver == null) return
    const voters = leader.driver.core.membership().voters
    const targets = voters.filter((id) => id !== leader.id && this.cluster.node(id).canCampaign)
    if (targets.length === 0) return
    const target = this.#random.pick(targets)
    this.#note(`transfer leadership ${leader.id} -> ${target}`)
    leader.driver.transferLeadership(target)
  }

  /** Heal everything, then require a leader and fresh commits applied on every member. */
  #checkLiveness(): void {
    const cluster = this.cluster
    this.#note('liveness phase: heal all faults')
    this.#liveness = true
    cluster.network.healAll()
    cluster.network.faults = { lossProbability: 0, duplicateProbability: 0 }
    for (const node of cluster.nodes.values()) {
      this.#setSlow(node, false)
      if (!node.up) cluster.start(node)
    }
    const deadlineMs = cluster.nowMs + LIVENESS_BOUND_MS
    const committed: number[] = []
    let proposed = 0
    while (cluster.nowMs < deadlineMs && !this.#failed()) {
      cluster.runUntil(cluster.nowMs + TICK_MS * ELECTION_TICKS)
      if (committed.length >= LIVENESS_PROPOSALS && this.#allMembersApplied(Math.max(...committed)))
        return
      // Re-propose while earlier ones are unanswered: a leader may have changed under them.
      if (
        cluster.leader() !== null &&
        committed.length < LIVENESS_PROPOSALS &&
        proposed < LIVENESS_PROPOSALS * 20
      ) {
        proposed++
        this.#propose((index) => committed.push(index))
      }
    }
    if (this.#failed()) return
    const leader = cluster.leader()
    const applied = [...cluster.nodes.values()]
      .map((node) => `${node.id}:${node.machine?.appliedIndex ?? '-'}`)
      .join(' ')
    cluster.checker.violations.push({
      invariant: 'Liveness',
      detail:
        `${LIVENESS_BOUND_MS} ms after healing: leader=${leader?.id ?? 'none'} committed=${committed.length}/${LIVENESS_PROPOSALS} ` +
        `applied ${applied}`,
      atMs: cluster.nowMs,
    })
  }

  #allMembersApplied(index: number): boolean {
    const leader = this.cluster.leader()
    if (leader?.driver == null) return false
    const membership = leader.driver.core.membership()
    const members: NodeId[] = [...membership.voters, ...membership.learners]
    return members.every((id) => (this.cluster.node(id).machine?.appliedIndex ?? 0) >= index)
  }

  #result(): SeedResult {
    const cluster = this.cluster
    return {
      seed: this.#options.seed,
      swarm: describeSwarm(this.#swarm),
      violations: cluster.checker.violations,
      events: cluster.events,
      simulatedMs: cluster.nowMs,
      proposalsCommitted: this.proposalsCommitted,
      leaderChanges: cluster.checker.leaderTerms,
      traceDigest: cluster.trace.digest,
      recentTrace: cluster.trace.recent(),
      fullTrace: cluster.trace.all(),
    }
  }
}

export function runSeed(options: ScenarioOptions): SeedResult {
  return new ChaosRun(options).run()
}
