// The Ready / advance contract the driver relies on: what must be persisted travels with
// (or before) the messages that depend on it, nothing is handed out twice, committed
// entries are durable before they are applied, and a restart resumes from what was saved.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { COMMITTED_ENTRIES_PER_READY_MAX } from '../../consensus/limits.ts'
import type { Message, Ready } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import {
  Network,
  entriesWithTerms,
  grants,
  ids,
  restoredWith,
  voteRequest,
} from './helpers/network.ts'

const E = 10

const vote = (from: string, to: string, voteTerm: number): Message =>
  voteRequest('vote', from, to, voteTerm)

function takeReady(network: Network, name: string): Ready {
  const core = network.core(name)
  assert.ok(core.hasReady(), `${name} has a Ready`)
  return core.ready()
}

test('a granted vote is in the same Ready as the hard state that records it, which must be synced', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.core('a').step(vote('b', 'a', 1))
  const ready = takeReady(network, 'a')
  assert.equal(ready.hardState, { term: 1, vote: 'b', commit: 0 })
  assert.ok(ready.mustSync)
  assert.equal(grants(ready.messages), [true])
})

test('an append is acknowledged in the same Ready as the entries it acknowledges, which must be synced', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.core('a').propose(new TextEncoder().encode('x'))
  const [toB] = network.takeQueued().filter((message) => message.to === 'b')
  network.core('b').step(toB!)
  const ready = takeReady(network, 'b')
  assert.equal(
    ready.entries.map((entry) => entry.index),
    [2],
  )
  assert.ok(ready.mustSync)
  const [answer] = ready.messages
  assert.ok(answer?.type === 'appendResponse' && answer.success && answer.index === 2)
})

test('a change of commit alone is handed out without a sync', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  // b stores entry 2 but hears nothing that would carry the commit of it.
  network.filter = (message) =>
    message.to !== 'b' ||
    !(message.type === 'heartbeat' || (message.type === 'append' && message.entries.length === 0))
  network.propose('a', 'x')
  assert.equal([network.core('b').lastIndex(), network.core('b').commitIndex()], [2, 1])
  network.core('b').step({
    type: 'heartbeat',
    from: nodeId('a'),
    to: nodeId('b'),
    term: term(1),
    commit: logIndex(2),
    sentTick: 0,
  })
  const ready = takeReady(network, 'b')
  assert.equal(ready.hardState, { term: 1, vote: 'a', commit: 2 })
  assert.is(ready.entries.length, 0)
  assert.not.ok(ready.mustSync)
})

test('the next Ready holds only what the previous one did not', () => {
  const network = Network.create(['a'])
  network.tick(2 * E)
  const core = network.core('a')
  core.propose(new TextEncoder().encode('x'))
  const first = core.ready()
  core.propose(new TextEncoder().encode('y')) // between ready() and advance()
  core.advance(first)
  const second = core.ready()
  assert.equal(
    first.entries.map((entry) => entry.index),
    [2],
  )
  assert.equal(
    second.entries.map((entry) => entry.index),
    [3],
  )
  assert.equal(second.hardState, { term: 1, vote: 'a', commit: 2 }, 'only the commit changed')
  assert.is(second.softState, null)
})

test('committed entries are handed out only once persisted: never before the Ready that stores them', () => {
  const network = Network.create(['a'])
  network.tick(2 * E)
  const core = network.core('a')
  core.propose(new TextEncoder().encode('x'))
  const storing = core.ready()
  assert.equal(storing.committedEntries, [])
  core.advance(storing) // now durable: the single node's own match counts
  const applying = core.ready()
  assert.equal(
    applying.committedEntries.map((entry) => entry.index),
    [2],
  )
})

test('the leader counts its own match only for entries it has persisted (advance)', () => {
  const network = Network.create(['a', 'b', 'c', 'd', 'e'])
  network.campaign('a')
  const leader = network.core('a')
  leader.propose(new TextEncoder().encode('x'))
  const ready = leader.ready()
  // As a driver does: persist, send, and answers arrive before advance().
  network.node('a').storage.persist(ready)
  const toTwo = ready.messages.filter((message) => message.to === 'b' || message.to === 'c')
  network.stepOnly(toTwo)
  for (const name of ['b', 'c']) {
    const answers = network.core(name).ready()
    network.core(name).advance(answers)
    network.stepOnly(answers.messages)
  }
  assert.is(leader.commitIndex(), 1, 'two followers and an unpersisted leader are not 3 of 5')
  leader.advance(ready)
  assert.is(leader.commitIndex(), 2)
})

test('entries truncated while their Ready is in flight are handed out again from the truncation point', () => {
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  const follower = network.add(
    nodeId('b'),
    restoredWith(voters, entriesWithTerms([1]), { term: term(2) }),
  )
  const append = (
    prevIndex: number,
    prevTerm: number,
    terms: number[],
    appendTerm: number,
  ): Message => ({
    type: 'append',
    from: nodeId('a'),
    to: nodeId('b'),
    term: term(appendTerm),
    prevLogIndex: logIndex(prevIndex),
    prevLogTerm: term(prevTerm),
    entries: entriesWithTerms(terms, prevIndex + 1),
    commit: logIndex(1),
    sentTick: 0,
  })
  follower.core.step(append(1, 1, [2, 2, 2], 2))
  const inFlight = follower.core.ready()
  assert.equal(
    inFlight.entries.map((entry) => entry.index),
    [2, 3, 4],
  )
  follower.core.step(append(2, 2, [3, 3], 3)) // a new leader replaces 3 and 4
  follower.storage.persist(inFlight)
  follower.core.advance(inFlight)
  const next = follower.core.ready()
  assert.equal(
    next.entries.map((entry) => [entry.index, entry.term]),
    [
      [3, 3],
      [4, 3],
    ],
  )
  follower.storage.persist(next)
  assert.equal(
    follower.storage.entries.map((entry) => entry.term),
    [1, 2, 3, 3],
  )
})

test(`at most ${COMMITTED_ENTRIES_PER_READY_MAX} committed entries are handed out per Ready`, () => {
  const count = COMMITTED_ENTRIES_PER_READY_MAX + 10
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  const restored = restoredWith(voters, entriesWithTerms(Array<number>(count).fill(1)), {
    commit: logIndex(count),
  })
  const node = network.add(nodeId('a'), restored)
  const first = node.core.ready()
  assert.is(first.committedEntries.length, COMMITTED_ENTRIES_PER_READY_MAX)
  node.core.advance(first)
  assert.is(node.core.ready().committedEntries.length, 10)
})

test('ready() twice without advance() is a programmer error', () => {
  const network = Network.create(['a'])
  network.tick(2 * E)
  network.core('a').propose(new Uint8Array(1))
  network.core('a').ready()
  assert.throws(() => network.core('a').ready(), /before advance/)
})

test('a restarted node resumes from its persisted term, vote, log and commit', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.propose('a', 'x')
  const before = network.core('b').hardState()
  network.node('b').restart()
  assert.equal(network.core('b').hardState(), before)
  assert.is(network.core('b').lastIndex(), 2)
  network.tick(1)
  assert.equal(network.node('b').commands(), ['x'], 're-applied from the snapshot point')
})

test('a restarted node does not vote twice in one term', () => {
  const network = Network.create(['a', 'b', 'c'], () => ({ canCampaign: false }))
  network.core('a').step(vote('b', 'a', 1))
  network.processReadies()
  network.node('a').restart()
  network.tickNode('a', E) // past the restart promise
  network.core('a').step(vote('c', 'a', 1))
  const ready = takeReady(network, 'a')
  assert.equal(grants(ready.messages), [false])
})

test("planted bug 'forgetVoteOnRestart': after a restart the node votes again in the same term", () => {
  const network = Network.create(['a', 'b', 'c'], () => ({
    plantedBug: 'forgetVoteOnRestart',
    canCampaign: false,
  }))
  network.core('a').step(vote('b', 'a', 1))
  network.processReadies()
  network.node('a').restart()
  network.tickNode('a', E) // past the restart promise
  network.core('a').step(vote('c', 'a', 1))
  network.processReadies()
  const granted = network.sentOf('voteResponse', 'a').filter((message) => message.granted)
  assert.equal(
    granted.map((message) => [message.to, message.term]),
    [
      ['b', 1],
      ['c', 1],
    ],
    'two votes in term 1',
  )
})

test.run()
