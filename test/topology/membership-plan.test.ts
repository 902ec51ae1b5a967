// The membership plan, driven to its end through the Raft core's own applyConfigChange: the
// cluster grows from one node to seven, a new secondary is promoted, nodes leave, and the
// leader is never demoted nor removed.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { applyConfigChange } from '../../consensus/membership.ts'
import type { ConfigChange, Membership, NodeId } from '../../consensus/types.ts'
import { VOTERS_MAX } from '../../node/topology/limits.ts'
import { planMembership } from '../../node/topology/membership-plan.ts'
import { isAdmitted } from '../../node/topology/queries.ts'
import { EMPTY_TOPOLOGY, type TopologyState } from '../../node/topology/topology-state.ts'
import { admit, build, createCluster, peer } from './topology-fixture.ts'

const STEPS_MAX = 64

/** Proposes each planned change in turn, as the leader would, until there is none. */
function converge(
  state: TopologyState,
  start: Membership,
  leader: NodeId | null,
): { membership: Membership; steps: ConfigChange[] } {
  let membership = start
  const steps: ConfigChange[] = []
  for (let step = 0; step < STEPS_MAX; step++) {
    const { next } = planMembership(state, membership, leader)
    if (next === null) {
      // Done: the membership is the desired one, but for a leader the topology no longer lists.
      const kept = (id: NodeId): boolean => id !== leader || isAdmitted(state, id)
      const reached = {
        voters: membership.voters.filter(kept),
        learners: membership.learners.filter(kept),
      }
      assert.equal(sorted(reached), sorted(planMembership(state, membership, leader).desired))
      return { membership, steps }
    }
    const outcome = applyConfigChange(membership, next)
    if (!outcome.ok) throw new Error(`planned an invalid change: ${outcome.reason}`)
    assertSafe(membership, outcome.membership, leader)
    membership = outcome.membership
    steps.push(next)
  }
  throw new Error(`no end after ${STEPS_MAX} changes`)
}

function assertSafe(before: Membership, after: Membership, leader: NodeId | null): void {
  assert.ok(after.voters.length > 0, 'a change never leaves no voter')
  if (leader !== null && before.voters.includes(leader))
    assert.ok(after.voters.includes(leader), 'the leader is never demoted nor removed')
}

const sorted = (membership: Membership): Membership => ({
  voters: [...membership.voters].sort(),
  learners: [...membership.learners].sort(),
})

const names = (peers: readonly NodeId[]): string[] =>
  peers.map((id) => id.replace('12D3KooW', '')).sort()

const ALPHA_ONLY: Membership = { voters: [peer('alpha')], learners: [] }
const LEADER = peer('alpha')

test('no cluster, no plan', () => {
  assert.is(planMembership(EMPTY_TOPOLOGY, ALPHA_ONLY, LEADER).next, null)
})

test('growing from one node to seven: voters capped at five, primary and secondary always voters', () => {
  const joining = ['bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf']
  let state = build([createCluster('alpha')])
  let membership = ALPHA_ONLY
  for (const [count, name] of joining.entries()) {
    state = build([admit(name, name === 'echo' ? ['secondary'] : ['replica'])], state)
    const result = converge(state, membership, LEADER)
    membership = result.membership
    assert.is(result.steps[0]?.type, 'addLearner', 'a newcomer catches up as a learner first')
    assert.is(membership.voters.length, Math.min(count + 2, VOTERS_MAX))
    assert.is(membership.voters.length + membership.learners.length, count + 2)
    assert.ok(membership.voters.includes(LEADER))
    if (count >= 3) assert.ok(membership.voters.includes(peer('echo')), 'the secondary votes')
  }
  // Echo, the secondary, came in when the voters were full: it took the seat of the last voter by name.
  assert.equal(names(membership.voters), ['alpha', 'bravo', 'charlie', 'delta', 'echo'])
  assert.equal(names(membership.learners), ['foxtrot', 'golf'])
})

test('current voters keep their seats: a new node whose name sorts first stays a learner', () => {
  const state = build([
    createCluster('alpha'),
    ...['bravo', 'charlie', 'delta', 'echo'].map((name) => admit(name, ['replica'])),
    admit('aardvark', ['replica']),
  ])
  const current: Membership = {
    voters: ['alpha', 'bravo', 'charlie', 'delta', 'echo'].map(peer),
    learners: [],
  }
  const { membership, steps } = converge(state, current, LEADER)
  assert.equal(steps, [{ type: 'addLearner', node: peer('aardvark') }])
  assert.equal(names(membership.voters), ['alpha', 'bravo', 'charlie', 'delta', 'echo'])
})

test('promoting a learner to secondary: a voter steps down first, then the secondary is promoted', () => {
  let state = build([
    createCluster('alpha'),
    admit('bravo', ['secondary']),
    ...['charlie', 'delta', 'echo', 'foxtrot'].map((name) => admit(name, ['replica'])),
  ])
  const start = converge(state, ALPHA_ONLY, LEADER).membership
  assert.equal(names(start.voters), ['alpha', 'bravo', 'charlie', 'delta', 'echo'])
  state = build(
    [
      { type: 'setRoles', name: 'bravo', roles: ['replica'] },
      { type: 'setRoles', name: 'foxtrot', roles: ['secondary'] },
    ],
    state,
  )
  const { membership, steps } = converge(state, start, LEADER)
  assert.equal(steps, [
    { type: 'addLearner', node: peer('echo') },
    { type: 'addVoter', node: peer('foxtrot') },
  ])
  assert.equal(names(membership.voters), ['alpha', 'bravo', 'charlie', 'delta', 'foxtrot'])
})

test('a removed voter is demoted before it is removed, and another node takes its seat', () => {
  let state = build([
    createCluster('alpha'),
    ...['bravo', 'charlie', 'delta', 'echo', 'foxtrot'].map((name) => admit(name, ['replica'])),
  ])
  const start = converge(state, ALPHA_ONLY, LEADER).membership
  state = build([{ type: 'removeNode', name: 'charlie' }], state)
  const { membership, steps } = converge(state, start, LEADER)
  assert.equal(steps, [
    { type: 'addLearner', node: peer('charlie') },
    { type: 'addVoter', node: peer('foxtrot') },
    { type: 'remove', node: peer('charlie') },
  ])
  assert.equal(names(membership.voters), ['alpha', 'bravo', 'delta', 'echo', 'foxtrot'])
  assert.equal(membership.learners, [])
})

test('the leader is never demoted nor removed, even when the topology no longer lists it', () => {
  const state = build([createCluster('alpha'), admit('bravo', ['secondary'])])
  // A node that was removed from the topology but still leads (the plan must wait for a new leader).
  const ghost = peer('ghost')
  const { membership } = converge(state, { voters: [ghost], learners: [] }, ghost)
  assert.ok(membership.voters.includes(ghost))
  assert.equal(names(membership.voters), ['alpha', 'bravo', 'ghost'])
  // Once another node leads, the ghost is demoted and then removed.
  const after = converge(state, membership, peer('alpha'))
  assert.equal(after.steps, [
    { type: 'addLearner', node: ghost },
    { type: 'remove', node: ghost },
  ])
  assert.equal(names(after.membership.voters), ['alpha', 'bravo'])
})

test('the leader keeps its seat ahead of other voters when primary and secondary need theirs', () => {
  // During a failover the leader may be a plain voter for a moment: it is never the one to go.
  const state = build([
    createCluster('alpha'),
    admit('bravo', ['secondary']),
    ...['charlie', 'delta', 'echo', 'zulu'].map((name) => admit(name, ['replica'])),
  ])
  const current: Membership = {
    voters: ['charlie', 'delta', 'echo', 'zulu', 'alpha'].map(peer),
    learners: [peer('bravo')],
  }
  const { membership } = converge(state, current, peer('zulu'))
  assert.ok(membership.voters.includes(peer('zulu')))
  assert.ok(membership.voters.includes(peer('bravo')))
  assert.is(membership.voters.length, VOTERS_MAX)
})

test.run()
