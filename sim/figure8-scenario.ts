// The Raft paper's Figure 8, scripted in the simulator with seeded timing: an entry X of
// an old term reaches a majority only through a later leader that has not yet spread an
// entry of its own term. A correct leader must not count X as committed; if it does (the
// planted bug 'commitEarlierTermByCounting'), a node holding a newer-term entry at X's index
// can still win an election and overwrite X, which the checker reports. The random chaos
// scenario rarely lines up these five steps, so this scenario sets them up on purpose.
import type { NodeId, PlantedBug } from '../consensus/types.ts'
import { SeededRandom } from './seeded-random.ts'
import { SimCluster, type SimNode } from './sim-cluster.ts'
import type { Violation } from './invariant-checker.ts'

const STEP_LIMIT_MS = 5_000
const POLL_MS = 5

export interface Figure8Result {
  readonly seed: number
  /** False when the seed's timing never produced the situation (no verdict either way). */
  readonly reachedOverwriteElection: boolean
  readonly violations: readonly Violation[]
  readonly recentTrace: readonly string[]
}

export function runFigure8(seed: number, plantedBug: PlantedBug | null): Figure8Result {
  const random = new SeededRandom(seed)
  const cluster = new SimCluster(seed, {
    nodeCount: 5,
    campaignerCount: 5,
    siteCount: random.between(1, 2),
    clockDriftBound: 0.05,
    tickMs: 50,
    electionTicks: 10,
    heartbeatTicks: 1,
    snapshotEntriesMin: 1000,
    // One entry per append, one append in flight: X can travel without the new leader's noop.
    maxEntriesPerAppend: 1,
    maxInflightAppends: 1,
    diskLatency: { writeMsMin: 0, writeMsMax: 2, syncMsMin: 1, syncMsMax: 5 },
    networkFaults: { lossProbability: 0, duplicateProbability: 0 },
    plantedBug,
    keepFullTrace: false,
  })
  const ids = [...cluster.nodes.keys()]
  const encoder = new TextEncoder()
  const result = (reached: boolean): Figure8Result => ({
    seed,
    reachedOverwriteElection: reached,
    violations: cluster.checker.violations,
    recentTrace: cluster.trace.recent(),
  })
  const failed = (): boolean => cluster.checker.violations.length > 0
  const waitFor = (condition: () => boolean): boolean => {
    const deadlineMs = cluster.nowMs + STEP_LIMIT_MS
    while (!failed() && cluster.nowMs < deadlineMs) {
      if (condition()) return true
      cluster.runUntil(cluster.nowMs + POLL_MS)
    }
    return !failed() && condition()
  }
  const note = (line: string): void => cluster.trace.add(cluster.nowMs, `-- figure 8: ${line}`)
  const isolate = (node: NodeId): void => {
    for (const other of ids) if (other !== node) cluster.network.cutBoth(node, other)
  }
  const connect = (a: NodeId, b: NodeId): void => {
    cluster.network.uncut(a, b)
    cluster.network.uncut(b, a)
  }
  const leaderAmong = (candidates: readonly NodeId[]): SimNode | null => {
    const leader = cluster.leader()
    return leader !== null && candidates.includes(leader.id) ? leader : null
  }

  // 1. A leader A commits a few entries everywhere.
  if (!waitFor(() => cluster.leader() !== null)) return result(false)
  const a = cluster.leader()!
  for (let index = 0; index < 3; index++)
    a.driver!.propose(encoder.encode(`warm-up ${index}`), () => {})
  if (!waitFor(() => cluster.upNodes().every((node) => node.machine!.appliedIndex >= 4)))
    return result(false)
  const [b, c, d, e] = random.shuffle(ids.filter((id) => id !== a.id)) as [
    NodeId,
    NodeId,
    NodeId,
    NodeId,
  ]

  // 2. A appends X and reaches only B; then A crashes and B is cut off.
  for (const other of [c, d, e]) cluster.network.cutBoth(a.id, other)
  const xIndex = a.driver!.core.lastIndex() + 1
  a.driver!.propose(encoder.encode('X'), () => {})
  note(`A=${a.id} proposes X at ${xIndex}, reaching only B=${b}`)
  if (!waitFor(() => cluster.node(b).driver!.core.lastIndex() >= xIndex)) return result(false)
  cluster.runUntil(cluster.nowMs + random.between(1, 30))
  cluster.crash(a)
  isolate(b)

  // 3. C, D and E elect a leader without X; it appends its noop Y at X's index and is cut off at once.
  const elected: { y: SimNode | null } = { y: null }
  cluster.onLeaderElected = (node) => {
    if (elected.y !== null || ![c, d, e].includes(node.id)) return
    elected.y = node
    isolate(node.id)
    note(`Y leader ${node.id} is cut off before its noop spreads`)
  }
  if (!waitFor(() => elected.y !== null)) return result(false)
  cluster.onLeaderElected = null
  const y = elected.y!
  const others = [c, d, e].filter((id) => id !== y.id) as [NodeId, NodeId]

  // 4. A restarts; A, B and the two others elect A or B, whose own-term entries may reach B
  //    but never the two others: X alone reaches them.
  cluster.start(a)
  for (const id of others) {
    connect(a.id, id)
    connect(b, id)
  }
  connect(a.id, b)
  let xLeaderTerm = -1
  cluster.network.filter = (message) =>
    !(
      message.type === 'append' &&
      others.includes(message.to) &&
      message.entries.some((entry) => entry.term === xLeaderTerm)
    )
  if (!waitFor(() => leaderAmong([a.id, b]) !== null)) return result(false)
  const xLeader = leaderAmong([a.id, b])!
  xLeaderTerm = xLeader.driver!.core.softState().term
  note(`X leader ${xLeader.id} in term ${xLeaderTerm}`)
  // A correct leader never commits X here; give it ample time, then strike.
  waitFor(() => (xLeader.machine?.appliedIndex ?? 0) >= xIndex)
  cluster.crash(xLeader)
  isolate(xLeader.id === a.id ? b : a.id)

  // 5. Y's leader comes back to the two others and campaigns: it may win, and overwrite X.
  cluster.network.filter = null
  for (const id of others) connect(y.id, id)
  note(`Y leader ${y.id} reconnects with ${others.join(', ')}`)
  const reached = waitFor(() => leaderAmong([y.id, ...others]) !== null)
  return result(reached)
}
