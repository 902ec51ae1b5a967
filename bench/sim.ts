// `npm run bench:sim`: simulator speed. Prints simulated events per wall-second and seeds
// per minute for the default chaos scenario over all cores, beside a reference measured in
// the same run — the bare event queue scheduling and running empty events — as a ratio.
// Goal (issue 2): 1000 seeds of the default scenario in under 60 s on a 2-core machine.
import { cpus } from 'node:os'
import { ALL_FAULTS } from '../sim/chaos-scenario.ts'
import { EventQueue } from '../sim/event-queue.ts'
import { runSeedsInWorkers } from '../sim/seed-runner.ts'

const SEEDS = Number(process.env['BENCH_SEEDS'] ?? 200)
const REFERENCE_EVENTS = 2_000_000

function referenceEventsPerSecond(): number {
  const queue = new EventQueue()
  const startedMs = performance.now()
  let ran = 0
  for (let index = 0; index < REFERENCE_EVENTS; index++) {
    queue.schedule(queue.nowMs + (index % 97) * 0.5, () => ran++)
    if (queue.size > 64) queue.runNext(Number.POSITIVE_INFINITY)
  }
  while (queue.runNext(Number.POSITIVE_INFINITY));
  return ran / ((performance.now() - startedMs) / 1000)
}

const jobs = cpus().length
const seeds = Array.from({ length: SEEDS }, (_, index) => index + 1)
let events = 0
let violations = 0
const startedMs = performance.now()
await runSeedsInWorkers(
  seeds,
  { nodeCount: 5, steps: 150, faults: ALL_FAULTS, plantedBug: null, keepFullTrace: false },
  jobs,
  (result) => {
    events += result.events
    violations += result.violations.length > 0 ? 1 : 0
  },
)
const wallSeconds = (performance.now() - startedMs) / 1000
const reference = referenceEventsPerSecond()
const eventsPerSecond = events / wallSeconds
const seedsPerMinute = (SEEDS / wallSeconds) * 60
console.log(
  `bench:sim seeds=${SEEDS} jobs=${jobs} violations=${violations} wall=${wallSeconds.toFixed(1)}s`,
)
console.log(`  simulated events/s (all jobs): ${Math.round(eventsPerSecond).toLocaleString('en')}`)
console.log(
  `  reference: bare event queue, one core: ${Math.round(reference).toLocaleString('en')} events/s`,
)
console.log(`  ratio simulated / bare queue: ${(eventsPerSecond / reference).toFixed(3)}`)
console.log(
  `  seeds per minute: ${Math.round(seedsPerMinute)}; 1000 seeds would take ${((1000 / seedsPerMinute) * 60).toFixed(1)} s (goal < 60 s)`,
)
