// A few hundred seeds of the default chaos scenario (every fault, proposals, membership
// changes, transfers) must break no invariant and pass the liveness check.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ALL_FAULTS, ChaosRun, LIVENESS_BOUND_MS } from '../../sim/chaos-scenario.ts'
import { runSeedsInWorkers } from '../../sim/seed-runner.ts'

const SEEDS = 300

test(`${SEEDS} seeds of the default scenario: no violation, and the runs really churn`, async () => {
  const seeds = Array.from({ length: SEEDS }, (_, index) => 10_001 + index)
  const failures: string[] = []
  let commits = 0
  let leaderTerms = 0
  await runSeedsInWorkers(
    seeds,
    { nodeCount: 5, steps: 150, faults: ALL_FAULTS, plantedBug: null, keepFullTrace: false },
    2,
    (result) => {
      commits += result.proposalsCommitted
      leaderTerms += result.leaderChanges
      const first = result.violations[0]
      if (first !== undefined)
        failures.push(`seed ${result.seed}: ${first.invariant}: ${first.detail}`)
    },
  )
  assert.equal(failures, [])
  assert.ok(commits > SEEDS * 10, `proposals commit (${commits})`)
  assert.ok(leaderTerms > SEEDS * 3, `leaders change often (${leaderTerms} terms with a leader)`)
})

test('the liveness check fails a cluster that cannot make progress after healing', () => {
  const run = new ChaosRun({
    seed: 5,
    nodeCount: 3,
    steps: 5,
    faults: ALL_FAULTS,
    plantedBug: null,
    keepFullTrace: false,
  })
  // A network that drops everything, which healing partitions does not repair.
  run.cluster.network.filter = () => false
  const result = run.run()
  assert.is(result.violations.length, 1)
  assert.is(result.violations[0]!.invariant, 'Liveness')
  assert.match(result.violations[0]!.detail, `${LIVENESS_BOUND_MS} ms after healing: leader=none`)
})

test.run()
