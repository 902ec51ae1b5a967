// The checker must catch real bugs: each test plants a known Raft bug through the core's
// test-only switch and requires the simulator to report it within a bounded number of
// seeds — and the same search without the bug to report nothing.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { PlantedBug } from '../../consensus/types.ts'
import { ALL_FAULTS, type Action } from '../../sim/chaos-scenario.ts'
import { runSeedsInWorkers } from '../../sim/seed-runner.ts'
import { runFigure8 } from '../../sim/figure8-scenario.ts'

interface Search {
  readonly invariants: string[]
  readonly seedsFound: number[]
}

async function search(
  plantedBug: PlantedBug | null,
  seeds: number,
  actionWeights: Partial<Record<Action, number>> = {},
): Promise<Search> {
  const found: Search = { invariants: [], seedsFound: [] }
  const range = Array.from({ length: seeds }, (_, index) => 1 + index)
  const options = {
    nodeCount: 5,
    steps: 150,
    faults: ALL_FAULTS,
    plantedBug,
    keepFullTrace: false,
    actionWeights,
  }
  await runSeedsInWorkers(range, options, 2, (result) => {
    const first = result.violations[0]
    if (first === undefined) return
    found.invariants.push(first.invariant)
    found.seedsFound.push(result.seed)
  })
  return found
}

test('granting a vote to a candidate with a shorter log breaks Leader Completeness within 50 seeds', async () => {
  const found = await search('voteForShorterLog', 50)
  assert.ok(found.seedsFound.length > 0, 'the default scenario catches it')
  assert.ok(found.invariants.includes('Leader Completeness'), found.invariants.join(', '))
})

// Crashes and quick restarts while leaders come and go: where a forgotten vote is cast twice.
const restartHeavy: Partial<Record<Action, number>> = {
  crash: 4,
  restart: 4,
  crashLeader: 3,
  bounce: 2,
  membership: 0,
  transfer: 0,
}

test('forgetting the vote on restart breaks Election Safety within 100 seeds', async () => {
  const found = await search('forgetVoteOnRestart', 100, restartHeavy)
  assert.ok(found.seedsFound.length > 0, 'the restart-heavy search catches it')
  assert.ok(
    found.invariants.every((invariant) => invariant === 'Election Safety'),
    found.invariants.join(', '),
  )
})

// Idle clusters and one-way partitions: a deaf minority campaigns while the leader keeps its quorum.
const partitionHeavy: Partial<Record<Action, number>> = {
  partition: 5,
  heal: 1,
  propose: 1,
  crash: 0,
  crashLeader: 0,
  bounce: 0,
  restart: 0,
  clog: 0,
  slow: 0,
  membership: 0,
  transfer: 0,
}

test('voting despite the lease promise gives two lease holders within 50 seeds', async () => {
  const found = await search('ignoreLeaseOnVote', 50, partitionHeavy)
  assert.ok(found.seedsFound.length > 0, 'the partition-heavy search catches it')
  assert.ok(found.invariants.includes('Lease'), found.invariants.join(', '))
})

test('the focused searches report nothing without a planted bug', async () => {
  assert.equal((await search(null, 60, restartHeavy)).seedsFound, [])
  assert.equal((await search(null, 60, partitionHeavy)).seedsFound, [])
})

test("committing an earlier term's entry by counting replicas is caught in the Figure 8 scenario within 20 seeds", () => {
  const caught = []
  for (let seed = 1; seed <= 20; seed++) {
    const result = runFigure8(seed, 'commitEarlierTermByCounting')
    if (result.violations.length > 0) caught.push(result.violations[0]!.invariant)
  }
  assert.ok(caught.length > 0, 'caught at least once')
  assert.ok(
    caught.every((invariant) => invariant === 'Leader Completeness'),
    caught.join(', '),
  )
})

test('the Figure 8 scenario is safe without the bug, and really reaches the overwriting election', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const result = runFigure8(seed, null)
    assert.equal(result.violations, [], `seed ${seed}`)
    assert.ok(
      result.reachedOverwriteElection,
      `seed ${seed} reached the election that may overwrite X`,
    )
  }
})

test.run()
