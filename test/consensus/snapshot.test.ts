// Compaction and InstallSnapshot (Raft paper §7): the log before a state-machine snapshot
// leaves memory, and a follower whose next entry is gone gets the snapshot instead.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Message, Snapshot } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { Network, emptyRestored, entriesWithTerms, ids, restoredWith } from './helpers/network.ts'

const E = 10
const encode = (text: string): Uint8Array => new TextEncoder().encode(text)

/** A leader `a` with `count` applied commands and its log compacted up to its applied index. */
function compactedCluster(count: number, lagging: string): Network {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.isolate(lagging)
  for (let index = 0; index < count; index++) network.propose('a', `x${index}`)
  const leader = network.core('a')
  leader.compact(leader.appliedIndex(), encode(`state@${leader.appliedIndex()}`))
  network.processReadies()
  return network
}

test('compact() drops the entries up to its index and hands the snapshot out once', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  for (let index = 0; index < 5; index++) network.propose('a', `x${index}`)
  const leader = network.core('a')
  leader.compact(logIndex(4), encode('state@4'))
  const ready = leader.ready()
  assert.equal(ready.compaction?.meta, {
    index: 4,
    term: 1,
    membership: { voters: ids('a', 'b', 'c'), learners: [] },
  })
  leader.advance(ready)
  assert.not.ok(leader.hasReady(), 'handed out once')
  assert.is(leader.firstIndex(), 5)
  assert.is(leader.entryAt(logIndex(4)), null)
  assert.is(leader.entryAt(logIndex(5))?.index, 5)
  assert.equal(leader.snapshotMeta()?.index, 4)
})

test('compacting beyond the applied index is a programmer error; at or below the snapshot, a no-op', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.propose('a', 'x')
  const leader = network.core('a')
  assert.throws(() => leader.compact(logIndex(3), new Uint8Array(0)), /beyond applied/)
  leader.compact(logIndex(0), new Uint8Array(0))
  assert.not.ok(leader.hasReady())
})

test('a follower whose next entry was compacted away receives the snapshot, then the entries after it', () => {
  const network = compactedCluster(8, 'c')
  network.propose('a', 'after')
  network.recover()
  network.tick(2)
  const snapshots = network.sentOf('snapshot', 'a')
  assert.equal(
    snapshots.map((message) => [message.to, message.snapshot.meta.index]),
    [['c', 9]],
  )
  const follower = network.node('c')
  const installing = follower.readies.find((ready) => ready.snapshot !== null)
  assert.equal(installing?.snapshot?.data, encode('state@9'))
  assert.ok(installing?.mustSync)
  assert.equal(follower.storage.snapshot?.meta.index, 9)
  assert.equal(follower.commands(), ['after'], 'entries after the snapshot applied on top of it')
  assert.is(follower.core.commitIndex(), network.core('a').commitIndex())
  assert.equal(follower.storage.entries, network.node('a').storage.entries)
})

test('a snapshot that matches the log (same index and term) keeps the entries after it', () => {
  const voters = ids('a', 'b', 'c')
  const network = new Network()
  const follower = network.add(
    nodeId('b'),
    restoredWith(voters, entriesWithTerms([1, 1, 1, 1, 1]), { term: term(1) }),
  )
  const snapshot: Snapshot = {
    meta: { index: logIndex(3), term: term(1), membership: { voters, learners: [] } },
    data: encode('state@3'),
  }
  const message: Message = {
    type: 'snapshot',
    from: nodeId('a'),
    to: nodeId('b'),
    term: term(1),
    snapshot,
    sentTick: 0,
  }
  follower.core.step(message)
  const ready = follower.core.ready()
  assert.is(ready.snapshot, null, 'nothing to install')
  assert.is(follower.core.lastIndex(), 5)
  assert.is(follower.core.commitIndex(), 3)
  const [answer] = ready.messages
  assert.ok(answer?.type === 'appendResponse' && answer.success && answer.index === 3)
})

test('a snapshot older than the commit index is answered with the commit index and ignored', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  for (let index = 0; index < 4; index++) network.propose('a', `x${index}`)
  const old: Snapshot = {
    meta: { index: logIndex(2), term: term(1), membership: network.core('b').membership() },
    data: encode('old'),
  }
  network.core('b').step({
    type: 'snapshot',
    from: nodeId('a'),
    to: nodeId('b'),
    term: term(1),
    snapshot: old,
    sentTick: 0,
  })
  const ready = network.core('b').ready()
  assert.is(ready.snapshot, null)
  const [answer] = ready.messages
  assert.ok(answer?.type === 'appendResponse' && answer.success && answer.index === 5)
})

test('a new node with no state at all is sent the snapshot, even the bootstrap one at index 0', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.propose('a', 'x')
  network.add(nodeId('d'), emptyRestored())
  network.core('a').proposeConfigChange({ type: 'addLearner', node: nodeId('d') })
  network.deliverAll()
  network.tick(1)
  const snapshot = network.sentOf('snapshot', 'a').find((message) => message.to === 'd')
  assert.is(snapshot?.snapshot.meta.index, 0)
  const learner = network.node('d')
  assert.equal(learner.core.membership(), { voters: ids('a', 'b', 'c'), learners: ids('d') })
  assert.equal(learner.storage.entries, network.node('a').storage.entries)
  assert.equal(learner.commands(), ['x'])
})

test('a lost snapshot is sent again once an election timeout has passed', () => {
  const network = compactedCluster(5, 'c')
  network.recover()
  let dropped = 0
  network.filter = (message) => !(message.type === 'snapshot' && dropped++ === 0)
  network.tick(1)
  assert.is(network.sentOf('snapshot', 'a').length, 0, 'the first one was lost')
  network.tick(E + 1)
  assert.is(network.sentOf('snapshot', 'a').length, 1)
  assert.equal(network.node('c').storage.entries, network.node('a').storage.entries)
  assert.is(network.core('c').commitIndex(), network.core('a').commitIndex())
})

test('a restarted node starts from its snapshot and re-applies the committed entries after it', () => {
  const network = compactedCluster(3, 'c')
  network.recover()
  network.propose('a', 'after')
  const node = network.node('a')
  node.restart()
  assert.is(node.core.appliedIndex(), 4)
  assert.is(node.core.firstIndex(), 5)
  network.tick(2 * E)
  assert.equal(node.commands(), ['after'])
})

test.run()
