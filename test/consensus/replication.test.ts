// Log replication (Raft paper §5.3): commit by majority, heartbeats, the pipeline, fast
// back-tracking, and harmless duplicated, reordered, stale and lost messages.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Entry, Message, NodeId } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { Network, SeededRandom } from './helpers/network.ts'

const E = 10

const termsOf = (entries: readonly Entry[]): number[] => entries.map((entry) => entry.term)
const repeat = (value: number, count: number): number[] => Array<number>(count).fill(value)

test('a new leader appends a noop entry of its term at once', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  const first = network.core('a').entryAt(logIndex(1))
  assert.equal(first && { kind: first.kind, term: first.term }, { kind: 'noop', term: 1 })
  assert.is(network.core('a').commitIndex(), 1)
})

test('an entry is committed once a majority stores it, and applied in order everywhere (§5.3)', () => {
  const network = Network.create(['a', 'b', 'c', 'd', 'e'])
  network.campaign('a')
  network.isolate('d')
  network.isolate('e')
  network.propose('a', 'x')
  network.propose('a', 'y')
  assert.is(network.core('a').commitIndex(), 3)
  for (const name of ['a', 'b', 'c']) assert.equal(network.node(name).commands(), ['x', 'y'], name)
  assert.equal(network.node('d').commands(), [])
})

test('without a majority nothing commits, and it commits once the majority is back', () => {
  const network = Network.create(['a', 'b', 'c', 'd', 'e'])
  network.campaign('a')
  for (const name of ['c', 'd', 'e']) network.isolate(name)
  network.propose('a', 'x')
  network.tick(3)
  assert.is(network.core('a').commitIndex(), 1)
  network.recover()
  network.tick(1)
  assert.is(network.core('a').commitIndex(), 2)
  for (const name of ['a', 'b', 'c', 'd', 'e'])
    assert.equal(network.node(name).commands(), ['x'], name)
})

test("heartbeats carry commit = min(the follower's match, the leader's commit)", () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.cut('a', 'c')
  network.propose('a', 'x')
  network.recover()
  network.filter = (message) => message.type !== 'append'
  network.tickNode('a')
  const heartbeats = network.sentOf('heartbeat', 'a').slice(-2)
  assert.equal(
    heartbeats.map((message) => [message.to, message.commit]),
    [
      ['b', 2],
      ['c', 1],
    ],
  )
})

test('a follower that is behind is caught up, several appends in flight at once', () => {
  const network = Network.create(['a', 'b', 'c'], () => ({ maxEntriesPerAppend: 2 }))
  network.campaign('a')
  network.isolate('c')
  for (let index = 0; index < 20; index++) network.propose('a', `x${index}`)
  network.recover()
  network.tick(1)
  assert.equal(network.node('c').commands(), network.node('a').commands())
  const toC = network.sentOf('append', 'a').filter((message) => message.to === 'c')
  assert.ok(toC.every((message) => message.entries.length <= 2))
})

test('fast back-tracking: a long divergent tail of one term costs one rejection', () => {
  const common = repeat(1, 10)
  const network = Network.withLogs(
    {
      a: [...common, ...repeat(3, 50)],
      b: [...common, ...repeat(2, 100)],
      c: [...common, ...repeat(3, 50)],
    },
    'a',
  )
  const rejections = network.sentOf('appendResponse', 'b').filter((message) => !message.success)
  assert.is(rejections.length, 1)
  assert.equal(termsOf(network.node('b').storage.entries), [...common, ...repeat(3, 50), 4])
})

test('fast back-tracking: a tail of many terms on the follower costs one rejection per leader term passed', () => {
  // etcd's example, each run of a term 20 entries long: leader 1 3 3 3 3 3 3 3 7, follower 1 3 3 4 4 5 5 5 6.
  const scale = (terms: number[]): number[] => terms.flatMap((value) => repeat(value, 20))
  const leaderLog = scale([1, 3, 3, 3, 3, 3, 3, 3, 7])
  const network = Network.withLogs(
    { a: leaderLog, b: scale([1, 3, 3, 4, 4, 5, 5, 5, 6]), c: leaderLog },
    'a',
  )
  const rejections = network.sentOf('appendResponse', 'b').filter((message) => !message.success)
  assert.is(rejections.length, 2)
  assert.equal(termsOf(network.node('b').storage.entries), [...leaderLog, 8])
})

test('duplicated and reordered appends and answers leave the logs identical', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  for (let round = 0; round < 5; round++) {
    for (let index = 0; index < 3; index++)
      network.core('a').propose(new TextEncoder().encode(`${round}.${index}`))
    const queued = network.takeQueued()
    network.deliver([...queued, ...queued].reverse())
  }
  network.tick(2)
  const leaderLog = network.node('a').storage.entries
  for (const name of ['b', 'c']) assert.equal(network.node(name).storage.entries, leaderLog, name)
  assert.equal(network.node('b').commands(), network.node('a').commands())
  assert.is(network.node('a').commands().length, 15)
  assert.is(network.core('a').invalidMessageCount() + network.core('b').invalidMessageCount(), 0)
})

test('a stale answer from an earlier term changes nothing at the leader', () => {
  const network = Network.create(['a', 'b', 'c'])
  network.campaign('a')
  network.isolate('a')
  network.tick(3 * E)
  network.recover()
  network.tick(2)
  const [leader] = network.leaders()
  assert.ok(leader !== undefined)
  const before = [...network.core(leader).progress()]
  network.core(leader).step({
    type: 'appendResponse',
    from: nodeId(leader === 'b' ? 'c' : 'b'),
    to: leader,
    term: term(1),
    success: true,
    index: logIndex(1000),
    hintIndex: logIndex(0),
    hintTerm: term(0),
    sentTick: 0,
  })
  assert.equal([...network.core(leader).progress()], before)
  assert.is(network.core(leader).softState().role, 'leader')
})

test('proposals beyond the bounds are refused: ENTRY_TOO_LARGE, TOO_MANY_UNCOMMITTED, NOT_LEADER', () => {
  const network = Network.create(['a', 'b', 'c'], () => ({
    maxEntryBytes: 8,
    maxUncommittedEntries: 3,
  }))
  network.campaign('a')
  const leader = network.core('a')
  assert.equal(leader.propose(new Uint8Array(9)), {
    ok: false,
    code: 'ENTRY_TOO_LARGE',
    leader: 'a',
  })
  network.isolate('b')
  network.isolate('c')
  for (let index = 0; index < 3; index++) assert.ok(leader.propose(new Uint8Array(8)).ok)
  assert.equal(leader.propose(new Uint8Array(1)), {
    ok: false,
    code: 'TOO_MANY_UNCOMMITTED',
    leader: 'a',
  })
  assert.equal(network.core('b').propose(new Uint8Array(1)), {
    ok: false,
    code: 'NOT_LEADER',
    leader: 'a',
  })
  network.recover()
  network.tick(1)
  assert.ok(leader.propose(new Uint8Array(1)).ok, 'accepted again once committed')
})

test('a follower never has more than maxInflightAppends appends unanswered', () => {
  const network = Network.create(['a', 'b', 'c'], () => ({
    maxEntriesPerAppend: 1,
    maxInflightAppends: 4,
  }))
  network.campaign('a')
  network.filter = (message) => message.type !== 'appendResponse' || message.from !== 'b'
  for (let index = 0; index < 10; index++) network.core('a').propose(new Uint8Array([index]))
  const toB = network
    .takeQueued()
    .filter((message) => message.type === 'append' && message.to === 'b')
  assert.is(toB.length, 4)
})

test('under random loss, duplication, reordering, partitions and restarts, no two leaders share a term and applied entries agree', () => {
  for (let seed = 1; seed <= 6; seed++) runFaultySchedule(seed)
})

/** A short schedule of random faults, with the safety invariants checked after each step. */
function runFaultySchedule(seed: number): void {
  const random = new SeededRandom(seed)
  const names = ['a', 'b', 'c', 'd', 'e'].slice(0, 3 + 2 * (seed % 2))
  const network = Network.create(names, (id) => ({
    random: new SeededRandom(seed * 101 + id.charCodeAt(0)),
    maxEntriesPerAppend: 3,
  }))
  const leaderOfTerm = new Map<number, NodeId>()
  const appliedAt = new Map<number, string>()
  let proposals = 0
  const check = (): void => {
    for (const node of network.nodes.values()) {
      const state = node.core.softState()
      if (state.role === 'leader') {
        const known = leaderOfTerm.get(state.term)
        assert.ok(
          known === undefined || known === node.id,
          `seed ${seed}: two leaders in term ${state.term}`,
        )
        leaderOfTerm.set(state.term, node.id)
      }
      for (const entry of node.applied) {
        const key = `${entry.term}:${new TextDecoder().decode(entry.data)}`
        const known = appliedAt.get(entry.index)
        assert.ok(
          known === undefined || known === key,
          `seed ${seed}: different entries applied at ${entry.index}`,
        )
        appliedAt.set(entry.index, key)
      }
    }
  }
  for (let step = 0; step < 400; step++) {
    const action = random.nextInt(20)
    const target = names[random.nextInt(names.length)]!
    if (action < 8) for (const node of network.nodes.values()) node.core.tick()
    else if (action < 12) {
      const [leader] = network.leaders()
      if (leader !== undefined)
        network.core(leader).propose(new TextEncoder().encode(`p${proposals++}`))
    } else if (action === 12) network.isolate(target)
    else if (action === 13) network.recover()
    else if (action === 14) network.node(target).restart()
    const delivered: Message[] = []
    for (const message of network.takeQueued()) {
      const fate = random.nextInt(10)
      if (fate === 0) continue // lost
      delivered.push(message)
      if (fate === 1) delivered.push(message) // duplicated
    }
    for (let swap = delivered.length - 1; swap > 0; swap--) {
      const other = random.nextInt(swap + 1)
      ;[delivered[swap], delivered[other]] = [delivered[other]!, delivered[swap]!]
    }
    network.stepOnly(delivered)
    check()
  }
  network.recover()
  network.tick(5 * E)
  check()
  const [leader] = network.leaders()
  assert.ok(leader !== undefined, `seed ${seed}: a leader after healing`)
  const leaderNode = network.node(leader)
  for (const node of network.nodes.values()) {
    assert.is(
      node.core.commitIndex(),
      leaderNode.core.commitIndex(),
      `seed ${seed}: ${node.id} commit`,
    )
    assert.equal(node.storage.entries, leaderNode.storage.entries, `seed ${seed}: ${node.id} log`)
  }
  assert.ok(leaderOfTerm.size >= 1 && proposals > 0)
}

test.run()
