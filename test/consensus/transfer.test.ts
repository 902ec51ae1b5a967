// Leadership transfer (Ongaro's thesis §3.10): the leader brings the target up to date,
// sends timeoutNow, and from then on holds no lease; the target campaigns at once with the
// leader's authority, which is the only thing that passes a voter's lease promise.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Message } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { Network, grants } from './helpers/network.ts'

const E = 10

/** Leader `a` of term 1 over a, b, c (and more names if given), with one command committed. */
function cluster(
  names = ['a', 'b', 'c'],
  options: Parameters<typeof Network.create>[1] = () => ({}),
): Network {
  const network = Network.create(names, options)
  network.campaign('a')
  network.propose('a', 'x')
  return network
}

test('a transfer to an up-to-date voter makes it leader of the next term at once, without waiting out leases', () => {
  const network = cluster()
  assert.equal(network.core('a').transferLeadership(nodeId('b')), { ok: true })
  network.deliverAll()
  assert.equal(network.leaders(), ['b'])
  assert.is(network.core('b').softState().term, 2)
  assert.equal(network.core('a').softState(), { role: 'follower', leader: 'b', term: 2 })
  const votes = network.sentOf('vote', 'b')
  assert.ok(
    votes.every((message) => message.transfer?.leader === 'a' && message.transfer.term === 1),
  )
  assert.is(network.sentOf('preVote', 'b').length, 0, 'no PreVote for a transfer')
  network.propose('b', 'y')
  assert.equal(network.node('c').commands(), ['x', 'y'])
})

test('a target that is behind is caught up first, then sent timeoutNow', () => {
  const network = cluster()
  network.cut('a', 'b')
  for (let index = 0; index < 5; index++) network.propose('a', `y${index}`)
  network.recover()
  network.core('a').transferLeadership(nodeId('b'))
  const queued = network.takeQueued()
  assert.equal(
    queued.map((message) => [message.type, message.to]),
    [['append', 'b']],
  )
  network.deliver(queued)
  assert.equal(network.leaders(), ['b'])
  assert.equal(
    network.node('b').storage.entries.slice(0, 7),
    network.node('a').storage.entries.slice(0, 7),
  )
})

test('proposals are refused during a transfer, and the lease is gone once timeoutNow is sent', () => {
  const network = cluster()
  network.filter = (message) => message.type !== 'timeoutNow'
  const leader = network.core('a')
  assert.ok(leader.leaseUntilTick() !== null)
  leader.transferLeadership(nodeId('b'))
  network.deliverAll()
  assert.is(leader.transferTarget(), 'b')
  assert.is(leader.leaseUntilTick(), null)
  assert.equal(leader.propose(new Uint8Array(1)), {
    ok: false,
    code: 'TRANSFER_IN_PROGRESS',
    leader: 'a',
  })
  network.tick(3)
  assert.is(leader.leaseUntilTick(), null, 'not even after new acknowledgements')
})

test('a transfer that does not complete within E ticks ends the leadership: the leader steps down', () => {
  const network = cluster()
  network.filter = (message) => message.type !== 'timeoutNow'
  network.core('a').transferLeadership(nodeId('b'))
  network.tick(E - 1)
  assert.is(network.core('a').softState().role, 'leader')
  network.tick(1)
  assert.equal(network.core('a').softState(), { role: 'follower', leader: null, term: 1 })
  assert.is(network.core('a').leaseUntilTick(), null)
})

test('a target that may not campaign ignores timeoutNow, and the transfer fails', () => {
  const network = cluster(['a', 'b', 'c'], (id) => ({ canCampaign: id === 'a' }))
  network.core('a').transferLeadership(nodeId('b'))
  network.deliverAll()
  assert.equal(network.leaders(), ['a'])
  assert.equal(network.core('b').softState(), { role: 'follower', leader: 'a', term: 1 })
  network.tick(E)
  assert.is(network.core('a').softState().role, 'follower')
})

test('transferLeadership refusals: NOT_LEADER, UNKNOWN_NODE (itself, unknown, learner), TRANSFER_IN_PROGRESS', () => {
  const network = cluster()
  network.core('a').proposeConfigChange({ type: 'addLearner', node: nodeId('l') })
  network.deliverAll()
  const leader = network.core('a')
  assert.equal(network.core('b').transferLeadership(nodeId('c')), { ok: false, code: 'NOT_LEADER' })
  for (const target of ['a', 'z', 'l'])
    assert.equal(
      leader.transferLeadership(nodeId(target)),
      { ok: false, code: 'UNKNOWN_NODE' },
      target,
    )
  network.filter = (message) => message.type !== 'timeoutNow'
  assert.equal(leader.transferLeadership(nodeId('b')), { ok: true })
  assert.equal(leader.transferLeadership(nodeId('c')), { ok: false, code: 'TRANSFER_IN_PROGRESS' })
})

test('a voter in lease passes its promise only for a vote naming its own leader and term', () => {
  const network = cluster()
  const transferVote = (leader: string, leaderTerm: number): Message => ({
    type: 'vote',
    from: nodeId('b'),
    to: nodeId('c'),
    term: term(2),
    lastLogIndex: logIndex(2),
    lastLogTerm: term(1),
    transfer: { leader: nodeId(leader), term: term(leaderTerm) },
  })
  const voter = network.core('c')
  voter.step(transferVote('z', 1)) // another leader
  voter.step(transferVote('a', 0)) // another term
  assert.not.ok(voter.hasReady(), 'ignored: no answer')
  voter.step(transferVote('a', 1))
  const ready = voter.ready()
  voter.advance(ready)
  assert.equal(grants(ready.messages), [true])
  assert.equal(voter.hardState().vote, 'b')
})

test('a timeoutNow from a node that is not the known leader is ignored', () => {
  const network = cluster()
  network.core('b').step({ type: 'timeoutNow', from: nodeId('c'), to: nodeId('b'), term: term(1) })
  assert.equal(network.core('b').softState(), { role: 'follower', leader: 'a', term: 1 })
})

test.run()
