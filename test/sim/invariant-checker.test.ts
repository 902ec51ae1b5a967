// The checker's rules on hand-made histories: each must fire on a broken one and stay
// quiet on a sound one.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Entry } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import type { RaftCore } from '../../consensus/raft-core.ts'
import { InvariantChecker } from '../../sim/invariant-checker.ts'

const n1 = nodeId('n1')
const n2 = nodeId('n2')
const entry = (index: number, entryTerm: number, text = `e${index}`): Entry => ({
  index: logIndex(index),
  term: term(entryTerm),
  kind: 'command',
  data: new TextEncoder().encode(text),
})
const batch = (
  entries: Entry[],
  hardState: { term: number; vote: string | null } | null = null,
) => ({
  entries,
  snapshot: null,
  compaction: null,
  hardState:
    hardState === null
      ? null
      : {
          term: term(hardState.term),
          vote: hardState.vote === null ? null : nodeId(hardState.vote),
          commit: logIndex(0),
        },
})
/** Just enough of a core for Leader Completeness: a log given as index → term. */
const coreWithLog = (terms: Record<number, number>): RaftCore =>
  ({
    snapshotMeta: () => null,
    entryAt: (index: number) => (terms[index] === undefined ? null : entry(index, terms[index]!)),
  }) as unknown as RaftCore

test('Election Safety: two leaders in one term, and two votes in one term', () => {
  const checker = new InvariantChecker(() => 0)
  checker.onLeader(n1, 3, coreWithLog({}))
  checker.onLeader(n1, 4, coreWithLog({}))
  assert.is(checker.violations.length, 0)
  checker.onLeader(n2, 4, coreWithLog({}))
  assert.is(checker.violations[0]?.invariant, 'Election Safety')

  const votes = new InvariantChecker(() => 0)
  votes.onPersist(n1, batch([], { term: 2, vote: 'n1' }), 0)
  votes.onPersist(n1, batch([], { term: 2, vote: 'n1' }), 0)
  votes.onPersist(n1, batch([], { term: 3, vote: 'n2' }), 0)
  assert.is(votes.violations.length, 0)
  votes.onPersist(n1, batch([], { term: 3, vote: 'n1' }), 0)
  assert.match(votes.violations[0]!.detail, 'n1 voted for n2 and for n1 in term 3')
})

test('Log Matching: the same index and term with other content or another predecessor', () => {
  const checker = new InvariantChecker(() => 0)
  checker.onPersist(n1, batch([entry(1, 1), entry(2, 1)]), 0)
  checker.onPersist(n2, batch([entry(2, 1)]), 1)
  assert.is(checker.violations.length, 0)
  checker.onPersist(n2, batch([entry(2, 1, 'other')]), 1)
  assert.is(checker.violations[0]?.invariant, 'Log Matching')
  const predecessor = new InvariantChecker(() => 0)
  predecessor.onPersist(n1, batch([entry(5, 3)]), 2)
  predecessor.onPersist(n2, batch([entry(5, 3)]), 1)
  assert.is(predecessor.violations[0]?.invariant, 'Log Matching')
})

test('State Machine Safety: another entry applied at an index, a gap, a false snapshot', () => {
  const checker = new InvariantChecker(() => 0)
  checker.onApply(n1, entry(1, 1), 11, 0, 1)
  checker.onApply(n2, entry(1, 1), 11, 0, 1)
  assert.is(checker.violations.length, 0)
  checker.onApply(n2, entry(2, 1), 22, 1, 1)
  checker.onApply(n1, entry(2, 2), 23, 1, 2)
  assert.is(checker.violations[0]?.invariant, 'State Machine Safety')
  const gap = new InvariantChecker(() => 0)
  gap.onApply(n1, entry(3, 1), 1, 1, 1)
  assert.match(gap.violations[0]!.detail, 'applied entry 3 right after 1')
  const snapshot = new InvariantChecker(() => 0)
  snapshot.onApply(n1, entry(1, 1), 11, 0, 1)
  snapshot.onRestore(n2, 1, 1, 11)
  assert.is(snapshot.violations.length, 0)
  snapshot.onRestore(n2, 1, 1, 99)
  snapshot.onRestore(n2, 2, 1, 11)
  assert.is(snapshot.violations.length, 2)
})

test('Leader Completeness: a leader of a later term lacks an entry applied earlier; an old term may win late', () => {
  const checker = new InvariantChecker(() => 0)
  checker.onApply(n1, entry(1, 1), 11, 0, 2)
  checker.onLeader(n2, 2, coreWithLog({})) // elected in the term the entry was committed in: no claim
  assert.is(checker.violations.length, 0)
  checker.onLeader(n1, 3, coreWithLog({ 1: 1 }))
  assert.is(checker.violations.length, 0)
  checker.onLeader(n2, 4, coreWithLog({ 1: 3 }))
  assert.is(checker.violations[0]?.invariant, 'Leader Completeness')
})

test('Lease: two holders at one instant, but not one after the other', () => {
  let nowMs = 100
  const checker = new InvariantChecker(() => nowMs)
  checker.checkLeases([
    { node: n1, untilGlobalMs: 100 },
    { node: n2, untilGlobalMs: 150 },
  ])
  assert.is(checker.violations.length, 0)
  nowMs = 99
  checker.checkLeases([
    { node: n1, untilGlobalMs: 100 },
    { node: n2, untilGlobalMs: 150 },
  ])
  assert.is(checker.violations[0]?.invariant, 'Lease')
})

test.run()
