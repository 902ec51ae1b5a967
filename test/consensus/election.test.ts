// Leader election (Raft paper §5.2, §5.4.1; PreVote and CheckQuorum from Ongaro's thesis
// §9.6 and §6.2), one rule per test: set-up, action, check.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Message } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import {
  Network,
  SeededRandom,
  emptyRestored,
  entriesWithTerms,
  fixedRandom,
  ids,
  restoredWith,
  voteRequest,
} from './helpers/network.ts'

const E = 10

test('a single node elects itself once its election timeout, in [E, 2E), has passed', () => {
  const network = Network.create(['a'])
  network.tick(E - 1)
  assert.is(network.core('a').softState().role, 'follower')
  network.tick(E)
  assert.equal(network.core('a').softState(), { role: 'leader', leader: 'a', term: 1 })
})

test('a candidate that wins the votes of a majority of 3 becomes leader; the others follow it', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  assert.equal(network.leaders(), ['a'])
  for (const name of ['b', 'c'])
    assert.equal(network.core(name).softState(), { role: 'follower', leader: 'a', term: 1 })
})

test('in a cluster of 5, a candidate wins with 3 votes and loses with 2', () => {
  const winning = Network.create(['a', 'b', 'c', 'd', 'e'])
  winning.isolate('d')
  winning.isolate('e')
  winning.campaign('a')
  assert.equal(winning.leaders(), ['a'])

  const losing = Network.create(['a', 'b', 'c', 'd', 'e'])
  for (const name of ['c', 'd', 'e']) losing.isolate(name)
  losing.campaign('a')
  assert.equal(losing.leaders(), [])
  assert.is(losing.core('a').softState().role, 'preCandidate')
  assert.is(
    losing.core('a').softState().term,
    0,
    'a PreVote without a quorum does not bump the term',
  )
})

test('split votes: identical timeouts split forever, randomised ones elect a leader', () => {
  const lockstep = Network.create(['a', 'b', 'c'], () => ({ random: fixedRandom(0) }))
  lockstep.tick(E * 10)
  assert.equal(lockstep.leaders(), [], 'every node campaigns at once and votes for itself')
  assert.ok(lockstep.core('a').softState().term >= 5)

  for (const seed of [1, 2, 3, 4, 5]) {
    const random = Network.create(['a', 'b', 'c'], (id) => ({
      random: new SeededRandom(seed * 31 + id.charCodeAt(0)),
    }))
    random.tick(E * 10)
    assert.is(random.leaders().length, 1, `seed ${seed} elects one leader`)
  }
})

test('a voter grants at most one vote per term, first come first served', () => {
  const network = Network.create(['a', 'b', 'c'])
  const voter = network.core('a')
  voter.step(voteRequest('vote', 'b', 'a', 1, [0, 0]))
  voter.step(voteRequest('vote', 'c', 'a', 1, [0, 0]))
  const answers = network.answersOf('a')
  assert.equal(
    answers.map((answer) => answer.type === 'voteResponse' && [answer.to, answer.granted]),
    [
      ['b', true],
      ['c', false],
    ],
  )
  assert.is(voter.hardState().vote, 'b')
})

test('a voter refuses a candidate whose log is less up to date (§5.4.1)', () => {
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  network.add(nodeId('a'), restoredWith(voters, entriesWithTerms([1, 1, 2]), { term: term(2) }))
  // [lastLogIndex, lastLogTerm] → granted
  const cases: [number, number, boolean][] = [
    [2, 1, false], // older last term
    [2, 2, false], // same last term, shorter
    [3, 2, true], // same
    [1, 3, true], // later last term, shorter
  ]
  network.tickNode('a', E) // past the restart promise (see lease.test.ts)
  for (const [index, [lastIndex, lastTerm, granted]] of cases.entries()) {
    network.core('a').step(voteRequest('vote', 'b', 'a', 3 + index, [lastIndex, lastTerm]))
    const answer = network.answersOf('a').find((message) => message.type === 'voteResponse')
    assert.ok(answer?.type === 'voteResponse' && answer.granted === granted, `case ${index}`)
  }
})

test("planted bug 'voteForShorterLog': the voter grants a candidate with a shorter log", () => {
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  const restored = restoredWith(voters, entriesWithTerms([1, 1, 2]), { term: term(2) })
  network.add(nodeId('a'), restored, { plantedBug: 'voteForShorterLog' })
  network.tickNode('a', E)
  network.core('a').step(voteRequest('vote', 'b', 'a', 3, [1, 1]))
  const answer = network.answersOf('a').find((message) => message.type === 'voteResponse')
  assert.ok(answer?.type === 'voteResponse' && answer.granted)
})

test('a candidate that hears from a leader of its own term becomes its follower (§5.2)', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.isolate('c')
  network.core('c').campaign()
  network.core('c').tick() // deliver nothing: c stays preCandidate
  assert.is(network.core('c').softState().role, 'preCandidate')
  network.recover()
  network.campaign('a')
  network.tick(1)
  assert.equal(network.core('c').softState(), { role: 'follower', leader: 'a', term: 1 })
})

test('a leader that sees a higher term becomes a follower in that term', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.core('a').step({
    type: 'heartbeat',
    from: nodeId('b'),
    to: nodeId('a'),
    term: term(5),
    commit: logIndex(0),
    sentTick: 0,
  })
  assert.equal(network.core('a').softState(), { role: 'follower', leader: 'b', term: 5 })
})

test('an append from a stale leader is answered with the newer term, and the stale leader steps down', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.isolate('c')
  // b meets a leader of term 2 (c, in a partition a cannot see).
  network.core('b').step({
    type: 'heartbeat',
    from: nodeId('c'),
    to: nodeId('b'),
    term: term(2),
    commit: logIndex(0),
    sentTick: 0,
  })
  network.tickNode('a') // a's heartbeat of term 1 reaches b; b's answer carries term 2
  const answer = network.sentOf('appendResponse', 'b').at(-1)
  assert.is(answer?.term, 2)
  assert.equal(network.core('a').softState(), { role: 'follower', leader: null, term: 2 })
})

test('PreVote: a partitioned node does not inflate its term, and on rejoining does not disrupt the leader', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.isolate('c')
  network.tick(10 * E)
  assert.is(network.core('c').softState().term, 1, 'no quorum of preVotes, no new term')
  network.recover()
  network.tick(E)
  assert.equal(network.leaders(), ['a'])
  assert.is(network.core('a').softState().term, 1)
  assert.equal(network.core('c').softState(), { role: 'follower', leader: 'a', term: 1 })
})

test('PreVote: a preCandidate becomes candidate only after a quorum of preVotes', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.core('a').campaign()
  const [preVotes] = [network.takeQueued()]
  assert.equal(
    preVotes.map((message) => [message.type, message.term]),
    [
      ['preVote', 1],
      ['preVote', 1],
    ],
  )
  assert.equal(network.core('a').softState(), { role: 'preCandidate', leader: null, term: 0 })
  network.deliver(preVotes.slice(0, 1)) // one grant + its own = quorum of 3
  assert.is(network.core('a').softState().role, 'leader')
  assert.is(network.core('a').softState().term, 1)
})

test('CheckQuorum: a leader that has not heard from a quorum within E ticks steps down', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.isolate('a')
  network.tickNode('a', E - 1)
  assert.is(network.core('a').softState().role, 'leader')
  network.tickNode('a', E + 1) // the first check still saw the answers to its first appends
  assert.equal(network.core('a').softState(), { role: 'follower', leader: null, term: 1 })
})

test('CheckQuorum: a leader that hears from a quorum keeps leading', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.isolate('c')
  network.tick(5 * E)
  assert.equal(network.leaders(), ['a'])
  assert.is(network.core('a').softState().term, 1)
})

test('a voter with canCampaign false never campaigns, until allowed to', () => {
  const network = Network.create(['a', 'b', 'c'], () => ({ canCampaign: false }))
  network.tick(10 * E)
  assert.equal(network.leaders(), [])
  assert.is(network.core('a').softState().term, 0)
  network.core('b').setCanCampaign(true)
  network.tick(2 * E)
  assert.equal(network.leaders(), ['b'])
})

test('learners, removed nodes and new nodes with no membership never campaign', () => {
  const voters = ids('a')
  const network = new Network()
  network.add(nodeId('a'), restoredWith(voters, []), { canCampaign: false })
  network.add(nodeId('l'), { ...restoredWith(voters, []), snapshot: learnerSnapshot() })
  network.add(nodeId('n'), emptyRestored())
  network.add(nodeId('x'), restoredWith(voters, []))
  network.tick(10 * E)
  for (const name of ['l', 'n', 'x']) {
    network.core(name).campaign()
    assert.is(network.core(name).softState().role, 'follower', name)
    assert.is(network.core(name).softState().term, 0, name)
  }
})

function learnerSnapshot(): ReturnType<typeof restoredWith>['snapshot'] {
  return {
    meta: {
      index: logIndex(0),
      term: term(0),
      membership: { voters: ids('a'), learners: ids('l') },
    },
    data: new Uint8Array(0),
  }
}

test('invalid messages are dropped and counted, never thrown', () => {
  const network = Network.create(['a', 'b', 'c'])
  const core = network.core('a')
  const bad: Message[] = [
    { ...voteRequest('vote', 'b', 'z', 1, [0, 0]) }, // not for this node
    { ...voteRequest('vote', 'a', 'a', 1, [0, 0]) }, // from itself
    { ...voteRequest('vote', 'b', 'a', 0, [0, 0]) }, // a vote at term 0
    { ...voteRequest('vote', 'b', 'a', -1, [0, 0]) },
    { ...voteRequest('vote', '', 'a', 1, [0, 0]) },
    {
      type: 'append',
      from: nodeId('b'),
      to: nodeId('a'),
      term: term(1),
      prevLogIndex: logIndex(0),
      prevLogTerm: term(0),
      entries: entriesWithTerms([1], 2), // does not follow prevLogIndex
      commit: logIndex(0),
      sentTick: 0,
    },
  ]
  for (const message of bad) core.step(message)
  assert.is(core.invalidMessageCount(), bad.length)
  assert.equal(core.softState(), { role: 'follower', leader: null, term: 0 })
  assert.not.ok(core.hasReady())
})

test.run()
