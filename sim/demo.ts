// `npm start` until the node exists: a narrated simulator run of five servers that elect
// a leader, commit writes, lose the leader to a crash and to a partition, and re-elect —
// with the invariant checker watching every event.
import { SimCluster, type SimNode } from './sim-cluster.ts'

const cluster = new SimCluster(Number(process.env['SEED'] ?? 7), {
  nodeCount: 5,
  campaignerCount: 2,
  siteCount: 1,
  clockDriftBound: 0.05,
  tickMs: 50,
  electionTicks: 10,
  heartbeatTicks: 2,
  snapshotEntriesMin: 50,
  maxEntriesPerAppend: 64,
  maxInflightAppends: 8,
  diskLatency: { writeMsMin: 0, writeMsMax: 1, syncMsMin: 1, syncMsMax: 3 },
  networkFaults: { lossProbability: 0, duplicateProbability: 0 },
  plantedBug: null,
  keepFullTrace: false,
})
const encoder = new TextEncoder()

function say(line: string): void {
  console.log(`${(cluster.nowMs / 1000).toFixed(2).padStart(7)} s  ${line}`)
}

function waitForLeader(excluding: SimNode | null, limitMs = 10_000): SimNode {
  const deadlineMs = cluster.nowMs + limitMs
  while (cluster.nowMs < deadlineMs) {
    cluster.runUntil(cluster.nowMs + 10)
    const leader = cluster.leader()
    if (leader !== null && leader !== excluding && leader.driver!.leaseExpiresAtMs() !== null)
      return leader
  }
  throw new Error('no leader within the time limit')
}

function commit(leader: SimNode, count: number): void {
  let done = 0
  for (let index = 0; index < count; index++) {
    leader.driver!.propose(encoder.encode(`write ${index}`), (outcome) => {
      if (outcome.ok) done++
    })
  }
  cluster.runUntil(cluster.nowMs + 500)
  say(
    `${leader.id} committed ${done} of ${count} writes; every node applied up to ${Math.min(...cluster.upNodes().map((node) => node.machine!.appliedIndex))}`,
  )
}

say('five servers start; n1 and n2 may campaign (the Primary and the Secondary), n3–n5 only vote')
let leader = waitForLeader(null)
say(
  `${leader.id} is elected leader in term ${leader.driver!.core.softState().term} and holds the lease`,
)
commit(leader, 10)

say(`${leader.id} crashes`)
cluster.crash(leader)
const crashed = leader
leader = waitForLeader(crashed)
say(
  `${leader.id} takes over in term ${leader.driver!.core.softState().term} once the old lease has run out`,
)
commit(leader, 10)

say(`${crashed.id} restarts and rejoins as a follower`)
cluster.start(crashed)
cluster.runUntil(cluster.nowMs + 1000)
say(
  `${crashed.id} caught up: applied ${crashed.machine!.appliedIndex}, following ${crashed.driver!.core.softState().leader}`,
)

say(`the network isolates ${leader.id}`)
for (const other of cluster.nodes.keys())
  if (other !== leader.id) cluster.network.cutBoth(leader.id, other)
const isolated = leader
leader = waitForLeader(isolated)
say(
  `${leader.id} is elected in term ${leader.driver!.core.softState().term}; ${isolated.id} lost its quorum and stepped down: ${isolated.driver!.core.softState().role}`,
)
commit(leader, 5)

say('the partition heals')
cluster.network.healAll()
cluster.runUntil(cluster.nowMs + 1000)
say(
  `${isolated.id} follows ${isolated.driver!.core.softState().leader} in term ${isolated.driver!.core.softState().term}`,
)

const violations = cluster.checker.violations
say(
  `${cluster.events} events checked: ${violations.length === 0 ? 'no invariant was broken' : violations.map((v) => v.detail).join('; ')}`,
)
console.log(
  '\nThe full clusterreplica node is not built yet; try `npm run sim -- --seeds 100` for the chaos simulator.',
)
process.exit(violations.length === 0 ? 0 : 1)
