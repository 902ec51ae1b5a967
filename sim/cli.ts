// `npm run sim -- …`: runs the chaos scenario over many seeds (or replays one) and ends
// with one summary line `sim: seeds=N violations=V …`; exits non-zero on any violation.
import { cpus } from 'node:os'
import { Command, InvalidArgumentError, Option } from 'commander'
import type { PlantedBug } from '../consensus/types.ts'
import {
  ALL_FAULTS,
  LIVENESS_BOUND_MS,
  type FaultSwitches,
  type SeedResult,
} from './chaos-scenario.ts'
import { runSeedsHere, runSeedsInWorkers, type RunOptions } from './seed-runner.ts'

const SEEDS_MAX = 10_000_000
const NODES_MAX = 9
const STEPS_MAX = 100_000
const PLANTED_BUGS: readonly PlantedBug[] = [
  'forgetVoteOnRestart',
  'commitEarlierTermByCounting',
  'voteForShorterLog',
  'ignoreLeaseOnVote',
]

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value)
    if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`)
    }
    return parsed
  }
}

interface CliOptions {
  seeds: number
  from: number
  seed?: number
  nodes: number
  steps: number
  jobs: number
  trace: boolean
  without: string[]
  plantedBug?: PlantedBug
}

const program = new Command('sim')
  .description(
    'Deterministic simulation of the Raft layer under network, disk, clock and crash faults',
  )
  .addOption(
    new Option('--seeds <n>', 'how many seeds to run')
      .argParser(integer('--seeds', 1, SEEDS_MAX))
      .default(100),
  )
  .addOption(
    new Option('--from <seed>', 'first seed of the range')
      .argParser(integer('--from', 0, 2 ** 48))
      .default(1),
  )
  .addOption(
    new Option('--seed <seed>', 'replay one seed and print its trace tail').argParser(
      integer('--seed', 0, 2 ** 48),
    ),
  )
  .addOption(
    new Option('--nodes <n>', 'cluster size')
      .argParser(integer('--nodes', 1, NODES_MAX))
      .default(5),
  )
  .addOption(
    new Option('--steps <n>', 'scenario steps before the liveness phase')
      .argParser(integer('--steps', 0, STEPS_MAX))
      .default(150),
  )
  .addOption(
    new Option('--jobs <n>', 'worker processes')
      .argParser(integer('--jobs', 1, 64))
      .default(cpus().length),
  )
  .option('--trace', 'with --seed: print the whole trace', false)
  .addOption(
    new Option('--without <fault...>', 'turn faults off')
      .choices(Object.keys(ALL_FAULTS))
      .default([]),
  )
  .addOption(
    new Option(
      '--planted-bug <bug>',
      'plant a known Raft bug (to see the checker catch it)',
    ).choices(PLANTED_BUGS),
  )
  .showHelpAfterError()

program.parse()
const cli = program.opts<CliOptions>()

const faults: FaultSwitches = Object.fromEntries(
  Object.entries(ALL_FAULTS).map(([name]) => [name, !cli.without.includes(name)]),
) as unknown as FaultSwitches

const runOptions: RunOptions = {
  nodeCount: cli.nodes,
  steps: cli.steps,
  faults,
  plantedBug: cli.plantedBug ?? null,
  keepFullTrace: cli.trace,
}

function printViolation(result: SeedResult): void {
  const first = result.violations[0]!
  console.log(
    `seed ${result.seed}: ${first.invariant} violated at ${first.atMs.toFixed(1)} ms: ${first.detail}`,
  )
  console.log(`  swarm: ${result.swarm}`)
  console.log('  last events:')
  for (const line of result.recentTrace) console.log(`    ${line}`)
  console.log(
    `  replay: npm run sim -- --seed ${result.seed} --nodes ${cli.nodes} --steps ${cli.steps}`,
  )
}

const startedMs = performance.now()
const totals = { seeds: 0, violations: 0, events: 0, simulatedMs: 0, commits: 0, leaders: 0 }
const failedSeeds: number[] = []

function collect(result: SeedResult): void {
  totals.seeds++
  totals.events += result.events
  totals.simulatedMs += result.simulatedMs
  totals.commits += result.proposalsCommitted
  totals.leaders += result.leaderChanges
  if (result.violations.length > 0) {
    totals.violations++
    failedSeeds.push(result.seed)
    printViolation(result)
  }
  if (cli.seed !== undefined) {
    if (cli.trace) for (const line of result.fullTrace) console.log(line)
    console.log(`seed ${result.seed}: swarm ${result.swarm}`)
    console.log(
      `seed ${result.seed}: trace digest ${result.traceDigest} over ${result.events} events`,
    )
  }
}

if (cli.seed !== undefined) {
  runSeedsHere([cli.seed], runOptions, collect)
} else {
  const seeds = Array.from({ length: cli.seeds }, (_, index) => cli.from + index)
  await runSeedsInWorkers(seeds, runOptions, cli.jobs, collect)
}

const wallSeconds = (performance.now() - startedMs) / 1000
console.log(
  `sim: seeds=${totals.seeds} violations=${totals.violations} events=${totals.events} ` +
    `simulated=${(totals.simulatedMs / 3_600_000).toFixed(2)}h commits=${totals.commits} leader-terms=${totals.leaders} ` +
    `liveness-bound=${LIVENESS_BOUND_MS}ms wall=${wallSeconds.toFixed(1)}s` +
    (failedSeeds.length > 0 ? ` failed-seeds=${failedSeeds.slice(0, 20).join(',')}` : ''),
)
process.exit(totals.violations > 0 ? 1 : 0)
