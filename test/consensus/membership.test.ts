// Single-server membership changes (Ongaro's thesis §4.1, with the fix of his raft-dev
// post of 2015: a leader changes the configuration only after committing an entry of its
// own term, and one change at a time). A config takes effect as soon as it is in the log.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { encodeConfigChange } from '../../consensus/codec.ts'
import type { ConfigChange, Entry, Message } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { Network, emptyRestored, entriesWithTerms, ids, restoredWith } from './helpers/network.ts'

const E = 10

const change = (type: ConfigChange['type'], node: string): ConfigChange => ({
  type,
  node: nodeId(node),
})

function proposeChange(network: Network, leader: string, configChange: ConfigChange): void {
  const result = network.core(leader).proposeConfigChange(configChange)
  assert.ok(result.ok, `${configChange.type} ${configChange.node} refused`)
  network.deliverAll()
}

/** A leader `a` of voters a, b, c, with one command committed. */
function threeVoters(): Network {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.propose('a', 'x')
  return network
}

test('addLearner: the new node gets the log, is not counted in quorums, and never campaigns', () => {
  const network = threeVoters()
  network.add(nodeId('d'), emptyRestored())
  proposeChange(network, 'a', change('addLearner', 'd'))
  network.tick(1)
  assert.equal(network.core('a').membership(), { voters: ids('a', 'b', 'c'), learners: ids('d') })
  assert.equal(network.node('d').commands(), ['x'])
  // Two voters gone: the learner's answers are no quorum.
  network.isolate('b')
  network.isolate('c')
  network.propose('a', 'y')
  assert.is(network.core('a').commitIndex(), 3)
  assert.is(network.core('d').lastIndex(), 4)
  network.isolate('a')
  network.tick(5 * E)
  assert.is(network.core('d').softState().term, 1, 'the learner never campaigned')
})

test('addVoter promotes a learner; addLearner demotes a voter; remove drops a node', () => {
  const network = threeVoters()
  network.add(nodeId('d'), emptyRestored())
  proposeChange(network, 'a', change('addLearner', 'd'))
  proposeChange(network, 'a', change('addVoter', 'd'))
  assert.equal(network.core('a').membership(), { voters: ids('a', 'b', 'c', 'd'), learners: [] })
  proposeChange(network, 'a', change('addLearner', 'b'))
  assert.equal(network.core('a').membership(), { voters: ids('a', 'c', 'd'), learners: ids('b') })
  proposeChange(network, 'a', change('remove', 'b'))
  assert.equal(network.core('a').membership(), { voters: ids('a', 'c', 'd'), learners: [] })
  for (const name of ['c', 'd'])
    assert.equal(network.core(name).membership(), network.core('a').membership())
  assert.is(network.core('a').progress().has(nodeId('b')), false)
})

test('a config takes effect on the leader when appended, before it commits', () => {
  const network = threeVoters()
  network.isolate('b')
  network.isolate('c')
  const result = network.core('a').proposeConfigChange(change('addLearner', 'd'))
  assert.ok(result.ok)
  network.deliverAll()
  assert.is(network.core('a').commitIndex(), 2, 'not committed')
  assert.equal(network.core('a').membership().learners, ids('d'))
})

test('a second change is refused while the first is uncommitted (CONFIG_CHANGE_PENDING)', () => {
  const network = threeVoters()
  network.isolate('b')
  network.isolate('c')
  assert.ok(network.core('a').proposeConfigChange(change('addLearner', 'd')).ok)
  const second = network.core('a').proposeConfigChange(change('addLearner', 'e'))
  assert.equal(second, { ok: false, code: 'CONFIG_CHANGE_PENDING', leader: 'a' })
  network.recover()
  network.deliverAll()
  network.tick(1)
  assert.ok(network.core('a').proposeConfigChange(change('addLearner', 'e')).ok)
})

test('a new leader refuses changes until it has committed an entry of its own term (CONFIG_CHANGE_PENDING)', () => {
  const network = threeVoters()
  network.filter = (message) => message.type !== 'appendResponse'
  network.isolate('a')
  network.tick(3 * E)
  const [leader] = network.leaders().filter((name) => name !== 'a')
  assert.ok(leader !== undefined)
  assert.equal(network.core(leader).proposeConfigChange(change('remove', 'a')), {
    ok: false,
    code: 'CONFIG_CHANGE_PENDING',
    leader,
  })
  network.recover()
  network.isolate('a')
  network.tick(1)
  assert.ok(network.core(leader).proposeConfigChange(change('remove', 'a')).ok)
})

test('invalid changes are refused: no-ops, the last voter, unknown nodes, bad ids', () => {
  const network = Network.create(['a'])
  network.tick(2 * E)
  const core = network.core('a')
  const refusal = (configChange: ConfigChange): string | undefined => {
    const result = core.proposeConfigChange(configChange)
    return result.ok ? undefined : result.code
  }
  assert.is(refusal(change('addVoter', 'a')), 'INVALID_CONFIG_CHANGE')
  assert.is(refusal(change('remove', 'a')), 'INVALID_CONFIG_CHANGE')
  assert.is(refusal(change('addLearner', 'a')), 'INVALID_CONFIG_CHANGE')
  assert.is(refusal(change('remove', 'z')), 'UNKNOWN_NODE')
  assert.is(refusal(change('addVoter', '')), 'INVALID_CONFIG_CHANGE')
  assert.is(refusal(change('addVoter', 'x'.repeat(257))), 'INVALID_CONFIG_CHANGE')
  assert.is(core.lastIndex(), 1, 'nothing appended')
})

test('proposals on a follower are refused with NOT_LEADER and the leader named', () => {
  const network = threeVoters()
  assert.equal(network.core('b').proposeConfigChange(change('remove', 'c')), {
    ok: false,
    code: 'NOT_LEADER',
    leader: 'a',
  })
})

test('a leader that removes itself leads until the removal commits, then steps down and never campaigns', () => {
  const network = threeVoters()
  proposeChange(network, 'a', change('remove', 'a'))
  assert.equal(network.core('a').softState(), { role: 'follower', leader: null, term: 1 })
  assert.equal(network.core('b').membership(), { voters: ids('b', 'c'), learners: [] })
  network.tick(4 * E)
  const [leader] = network.leaders()
  assert.ok(leader === 'b' || leader === 'c')
  network.propose(leader, 'y')
  assert.equal(network.node(leader === 'b' ? 'c' : 'b').commands(), ['x', 'y'])
  assert.is(network.core('a').softState().role, 'follower')
})

test('a leader whose own demotion commits steps down', () => {
  const network = threeVoters()
  proposeChange(network, 'a', change('addLearner', 'a'))
  assert.is(network.core('a').softState().role, 'follower')
  assert.equal(network.core('a').membership().learners, ids('a'))
})

test('a config entry truncated away from a follower reverts its membership', () => {
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  const follower = network.add(
    nodeId('b'),
    restoredWith(voters, entriesWithTerms([1]), { term: term(2) }),
  )
  const configEntry: Entry = {
    term: term(2),
    index: logIndex(2),
    kind: 'config',
    data: encodeConfigChange(change('remove', 'c')),
  }
  const append = (entries: Entry[], appendTerm: number, from: string): Message => ({
    type: 'append',
    from: nodeId(from),
    to: nodeId('b'),
    term: term(appendTerm),
    prevLogIndex: logIndex(1),
    prevLogTerm: term(1),
    entries,
    commit: logIndex(1),
    sentTick: 0,
  })
  follower.core.step(append([configEntry], 2, 'a'))
  assert.equal(follower.core.membership().voters, ids('a', 'b'))
  follower.core.step(append(entriesWithTerms([3], 2), 3, 'c'))
  assert.equal(follower.core.membership().voters, ids('a', 'b', 'c'))
})

test.run()
