// The Raft paper's Figure 7 (a new leader repairs every kind of follower log) and Figure 8
// (an entry of an earlier term, stored on a majority, must not be committed by counting).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Entry } from '../../consensus/types.ts'
import { logIndex } from '../../consensus/types.ts'
import { Network } from './helpers/network.ts'

const E = 10
const termsOf = (entries: readonly Entry[]): number[] => entries.map((entry) => entry.term)

// Figure 7: the leader's log (it leads term 8) and the follower logs (a)–(f).
const LEADER_LOG = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
const FOLLOWER_LOGS: Record<string, number[]> = {
  a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
  b: [1, 1, 1, 4],
  c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
  d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
  e: [1, 1, 1, 4, 4, 4, 4],
  f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}

for (const [name, followerLog] of Object.entries(FOLLOWER_LOGS)) {
  test(`Figure 7 (${name}): the leader of term 8 makes the follower's log match its own`, () => {
    // A third node with the leader's log gives it a majority even when the follower refuses its vote.
    const network = Network.withLogs(
      { leader: LEADER_LOG, follower: followerLog, helper: LEADER_LOG },
      'leader',
      {
        term: 7,
      },
    )
    network.tick(1)
    assert.is(network.core('leader').softState().term, 8)
    const expected = [...LEADER_LOG, 8]
    assert.equal(termsOf(network.node('follower').storage.entries), expected)
    assert.equal(network.node('follower').storage.entries, network.node('leader').storage.entries)
    assert.is(network.core('follower').commitIndex(), expected.length)
  })
}

/**
 * Figure 8 (c): S1 leads term 4 and has just copied its entry 2 (of term 2) to S3, so that
 * S1, S3 and S4 hold it; S5 holds a different entry 2, of term 3. S1's own entry 3 (its noop
 * of term 4) is kept from the others.
 */
function figure8(plantedBug: 'commitEarlierTermByCounting' | null): Network {
  const network = Network.withLogs({ s1: [1, 2], s2: [1], s3: [1], s4: [1], s5: [1, 3] }, 's1', {
    term: 3,
    commit: 1,
    overrides: () => ({
      maxEntriesPerAppend: 1,
      ...(plantedBug === null ? {} : { plantedBug }),
    }),
    // S2 learns nothing of term 4 but the heartbeats; S3 and S4 get entry 2, then no more.
    filter: (message, { nodes }) =>
      message.type !== 'append' ||
      (message.to !== 's2' &&
        !(
          nodes.get(message.to)!.core.lastIndex() >= 2 &&
          message.entries.some((entry) => entry.index === 3)
        )),
  })
  network.tick(2)
  return network
}

test('Figure 8: an entry of an earlier term stored on a majority is not committed by counting', () => {
  const network = figure8(null)
  const holders = ['s1', 's2', 's3', 's4', 's5'].filter(
    (name) => network.core(name).entryAt(logIndex(2))?.term === 2,
  )
  assert.equal(holders, ['s1', 's3', 's4'], 'a majority holds entry 2 of term 2')
  assert.is(network.core('s1').softState().term, 4)
  assert.is(network.core('s1').commitIndex(), 1)

  // (d): S1 fails; S5 is elected with the votes of S2, S3 and S4 and overwrites entry 2 — rightly.
  network.recover()
  network.isolate('s1')
  network.core('s5').setCanCampaign(true)
  network.tick(4 * E)
  assert.equal(network.core('s5').softState().role, 'leader')
  for (const name of ['s2', 's3', 's4', 's5']) {
    assert.is(network.core(name).entryAt(logIndex(2))?.term, 3, name)
    assert.is(network.core(name).invalidMessageCount(), 0, name)
  }
})

test("Figure 8 with 'commitEarlierTermByCounting' planted: the entry is committed, and a later leader lacks it", () => {
  const network = figure8('commitEarlierTermByCounting')
  assert.is(network.core('s1').commitIndex(), 2, 'committed by counting replicas')
  assert.is(network.node('s1').applied.at(-1)?.term, 2, 'and applied')

  network.recover()
  network.isolate('s1')
  network.core('s5').setCanCampaign(true)
  network.tick(4 * E)
  const s5 = network.core('s5')
  assert.is(s5.softState().role, 'leader')
  assert.is(
    s5.entryAt(logIndex(2))?.term,
    3,
    'Leader Completeness is broken: the new leader lacks committed entry 2',
  )
  for (const name of ['s3', 's4']) {
    assert.is(network.core(name).commitIndex(), 2, `${name} committed entry 2 from S1's heartbeats`)
    assert.is(
      network.core(name).entryAt(logIndex(2))?.term,
      2,
      `${name} keeps it: the logs stay split`,
    )
  }
})

test.run()
