// The leader lease and the promise it rests on (consensus/lease.ts): lease-based vote
// refusal, the restart rule, the exact lease value, and the planted bug that breaks it.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { leaseTicksFor } from '../../consensus/lease.ts'
import { validateRaftOptions } from '../../consensus/raft-options.ts'
import type { Message } from '../../consensus/types.ts'
import { nodeId, term } from '../../consensus/types.ts'
import {
  Network,
  fixedRandom,
  grants,
  ids,
  restoredWith,
  testOptions,
  voteRequest,
} from './helpers/network.ts'

const E = 10
const LEASE_TICKS = 6 // floor((10 - 1) × 0.9 / 1.1) - 1

const preVote = (from: string, to: string, requestTerm: number): Message =>
  voteRequest('preVote', from, to, requestTerm, [100, requestTerm - 1])
const vote = (from: string, to: string, requestTerm: number): Message =>
  voteRequest('vote', from, to, requestTerm, [100, requestTerm - 1])

/** A leader `a` of term 1 with followers b and c that heard from it just now. */
function clusterWithLeader(options: Parameters<typeof Network.create>[1] = () => ({})): Network {
  const network = Network.create(['a', 'b', 'c'], options)
  network.campaign('a')
  return network
}

test('leaseTicks = floor((E - 1)(1 - d) / (1 + d)) - 1, and options that leave no lease are refused', () => {
  assert.is(leaseTicksFor({ electionTicks: 10, clockDriftBound: 0.1 }), 6)
  assert.is(leaseTicksFor({ electionTicks: 10, clockDriftBound: 0 }), 8)
  assert.is(leaseTicksFor({ electionTicks: 20, clockDriftBound: 0.2 }), 11)
  const tooShort = testOptions(nodeId('a'), { electionTicks: 3, clockDriftBound: 0.4 })
  assert.match(validateRaftOptions(tooShort) ?? '', /lease would be under one tick/)
  assert.is(validateRaftOptions(testOptions(nodeId('a'))), null)
})

test('the lease is the quorum-th largest acknowledged sentTick plus leaseTicks, exactly', () => {
  const network = clusterWithLeader()
  const leader = network.core('a')
  assert.is(leader.leaseUntilTick(), 0 + LEASE_TICKS, 'b and c answered the appends of tick 0')
  network.tick(3)
  assert.is(leader.leaseUntilTick(), 3 + LEASE_TICKS, 'heartbeats of tick 3 answered')
  network.cut('a', 'c')
  network.tick(2)
  assert.is(leader.leaseUntilTick(), 5 + LEASE_TICKS, 'b alone (with a) is a quorum')
  network.cut('a', 'b')
  network.tick(4)
  assert.is(leader.tickCount(), 9)
  assert.is(leader.leaseUntilTick(), 5 + LEASE_TICKS, 'nothing newer acknowledged')
})

test("an answer to this node's append of an earlier term is no acknowledgement for this term's lease", () => {
  const network = clusterWithLeader((id) => ({ canCampaign: id === 'a' })) // a leads term 1
  network.tick(5)
  const staleHeartbeat = network.sentOf('heartbeat', 'a').at(-1)!
  network.isolate('a')
  network.tick(3 * E) // a steps down (CheckQuorum); the others' leases run out
  network.recover()
  network.filter = (message) =>
    message.type !== 'appendResponse' && message.type !== 'heartbeatResponse'
  network.campaign('a')
  const leader = network.core('a')
  assert.equal([leader.softState().role, leader.softState().term], ['leader', 2])
  assert.is(leader.leaseUntilTick(), null, 'no answer of term 2 yet')
  // b answers the stale heartbeat of term 1 with its current term, 2, echoing tick 5.
  network.recover()
  network.core('b').step({ ...staleHeartbeat, to: nodeId('b') })
  const [answer] = network.answersOf('b')
  assert.ok(answer?.type === 'appendResponse' && answer.term === 2 && answer.sentTick === 5)
  leader.step(answer)
  assert.is(leader.leaseUntilTick(), null)
})

test('the lease is null on a follower, and on a leader no quorum has acknowledged yet', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.filter = (message) =>
    message.type !== 'appendResponse' && message.type !== 'heartbeatResponse'
  network.campaign('a')
  assert.is(network.core('a').softState().role, 'leader')
  assert.is(network.core('a').leaseUntilTick(), null)
  assert.is(network.core('b').leaseUntilTick(), null)
  network.recover()
  network.tick(1)
  assert.is(network.core('a').leaseUntilTick(), 1 + LEASE_TICKS)
})

test('a follower that heard from the leader within E ticks ignores vote and preVote requests: no answer, no term change', () => {
  const network = clusterWithLeader()
  const follower = network.core('b')
  follower.step(preVote('c', 'b', 2))
  follower.step(vote('c', 'b', 2))
  assert.equal(network.answersOf('b'), [])
  assert.equal(follower.hardState(), { term: 1, vote: 'a', commit: 1 })
})

test('once E ticks pass without the leader, the follower answers vote requests again', () => {
  const network = clusterWithLeader(() => ({ random: fixedRandom(E - 1) }))
  network.isolate('a')
  network.tickNode('b', E - 1)
  network.core('b').step(preVote('c', 'b', 2))
  assert.equal(network.answersOf('b'), [], 'still in lease at E - 1 ticks')
  network.tickNode('b')
  network.core('b').step(preVote('c', 'b', 2))
  const answers = network.answersOf('b')
  assert.equal(grants(answers), [true])
})

test('in lease, a stale answer from a later term does not move a follower to that term', () => {
  const network = clusterWithLeader()
  network.core('b').step({
    type: 'preVoteResponse',
    from: nodeId('c'),
    to: nodeId('b'),
    term: term(7),
    granted: false,
  })
  assert.equal(network.core('b').softState(), { role: 'follower', leader: 'a', term: 1 })
})

test('a restarted node ignores vote requests for its first E ticks, since it may have promised a leader before the crash', () => {
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  const node = network.add(nodeId('b'), restoredWith(voters, [], { term: term(3) }), {
    random: fixedRandom(E - 1),
  })
  node.core.step(vote('c', 'b', 4))
  node.core.campaign()
  assert.equal(network.answersOf('b'), [])
  assert.equal(node.core.softState(), { role: 'follower', leader: null, term: 3 })
  network.tickNode('b', E)
  node.core.step(vote('c', 'b', 4))
  const answers = network.answersOf('b')
  assert.equal(grants(answers), [true])
})

test('a node still in term 0 promised nothing and votes at once', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.core('b').step(vote('c', 'b', 1))
  const answers = network.answersOf('b')
  assert.equal(grants(answers), [true])
})

test("planted bug 'ignoreLeaseOnVote': a follower in lease votes, and so does a node just restarted", () => {
  const network = clusterWithLeader(() => ({ plantedBug: 'ignoreLeaseOnVote' }))
  network.core('b').step(vote('c', 'b', 2))
  const inLease = network.answersOf('b')
  assert.equal(grants(inLease), [true])

  const restarted = new Network()
  const node = restarted.add(nodeId('b'), restoredWith(ids('a', 'b', 'c'), [], { term: term(3) }), {
    plantedBug: 'ignoreLeaseOnVote',
  })
  node.core.step(vote('c', 'b', 4))
  const answers = restarted.answersOf('b')
  assert.equal(grants(answers), [true])
})

test('no other node becomes leader while the old leader still holds its lease (no clock drift here)', () => {
  for (const seed of [1, 2, 3]) {
    const offsets: Record<string, number> = { a: 0, b: seed, c: seed + 4 }
    const network = clusterWithLeader((id) => ({ random: fixedRandom(offsets[id]!) }))
    network.tick(5)
    network.isolate('a')
    let leaseUntil = network.core('a').leaseUntilTick()
    for (let tick = 0; tick < 5 * E; tick++) {
      network.tick(1)
      leaseUntil = network.core('a').leaseUntilTick() ?? leaseUntil
      const others = network.leaders().filter((leader) => leader !== 'a')
      if (others.length === 0) continue
      assert.ok(leaseUntil !== null && network.core('b').tickCount() > leaseUntil)
      break
    }
    assert.is(network.leaders().filter((leader) => leader !== 'a').length, 1, `seed ${seed}`)
  }
})

test('with the lease ignored, a new leader is elected while the old lease still holds', () => {
  const network = clusterWithLeader((id) => ({
    plantedBug: 'ignoreLeaseOnVote',
    random: fixedRandom(id === 'b' ? 0 : E - 1),
  }))
  network.tick(5)
  network.isolate('a')
  const leaseUntil = network.core('a').leaseUntilTick()!
  network.core('b').campaign() // e.g. an operator's "campaign now", or a timeout
  network.deliverAll()
  assert.equal(network.leaders().sort(), ['a', 'b'])
  assert.ok(
    network.core('a').tickCount() <= leaseUntil,
    'two leaders while a believes its lease holds',
  )
})

test.run()
