// The driver on its own: one node over the simulator's clock and disk. It must persist
// before it applies, answer proposals at apply time, survive a state machine that proposes
// from inside apply, compact, hold a lease only as leader, and stop on a storage failure.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { DEFAULT_RAFT_LIMITS } from '../../consensus/raft-core.ts'
import { leaseTicksFor } from '../../consensus/lease.ts'
import { logIndex, nodeId, term, type Entry, type Snapshot } from '../../consensus/types.ts'
import { RaftDriver, type ProposalOutcome, type StateMachine } from '../../node/raft-driver.ts'
import type { RaftStorage, RaftWriteBatch } from '../../storage/raft-storage.ts'
import { EventQueue } from '../../sim/event-queue.ts'
import { SeededRandom } from '../../sim/seeded-random.ts'
import { SimClock } from '../../sim/sim-clock.ts'
import { SimDisk } from '../../sim/sim-disk.ts'

const self = nodeId('n1')
const TICK_MS = 50

class RecordingMachine implements StateMachine {
  readonly applied: Entry[] = []
  onApply: ((entry: Entry) => void) | null = null
  apply(entry: Entry): void {
    this.applied.push(entry)
    this.onApply?.(entry)
  }
  restore(_snapshot: Snapshot): void {}
  snapshot(): Uint8Array {
    return new Uint8Array([this.applied.length])
  }
}

function setUp(storage?: (disk: SimDisk) => RaftStorage) {
  const queue = new EventQueue()
  const disk = new SimDisk(queue, new SeededRandom(1), {
    writeMsMin: 0,
    writeMsMax: 1,
    syncMsMin: 1,
    syncMsMax: 2,
  })
  disk.bootstrap({
    meta: { index: logIndex(0), term: term(0), membership: { voters: [self], learners: [] } },
    data: new Uint8Array(),
  })
  const machine = new RecordingMachine()
  const writes: RaftWriteBatch[] = []
  const fatal: Error[] = []
  const recording: RaftStorage = {
    write: (batch, sync, done) => {
      writes.push(batch)
      disk.write(batch, sync, done)
    },
  }
  const driver = new RaftDriver({
    raft: {
      ...DEFAULT_RAFT_LIMITS,
      id: self,
      electionTicks: 10,
      heartbeatTicks: 1,
      clockDriftBound: 0.05,
      canCampaign: true,
      random: new SeededRandom(2),
    },
    restored: disk.load(),
    tickMs: TICK_MS,
    snapshotEntriesMin: 5,
    storage: storage?.(disk) ?? recording,
    transport: { send: () => {} },
    clock: new SimClock(queue, 1, 0),
    stateMachine: machine,
    onFatal: (error) => fatal.push(error),
  })
  driver.start()
  const run = (ms: number): void => {
    const until = queue.nowMs + ms
    while (queue.runNext(until));
  }
  return { queue, driver, machine, writes, fatal, run }
}

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)

test('a single node elects itself, and proposals are applied in order and answered', () => {
  const { driver, machine, run } = setUp()
  run(2_000)
  assert.is(driver.core.softState().role, 'leader')
  const outcomes: ProposalOutcome[] = []
  for (const text of ['a', 'b', 'c'])
    driver.propose(bytes(text), (outcome) => outcomes.push(outcome))
  run(100)
  assert.equal(
    outcomes.map((outcome) => outcome.ok),
    [true, true, true],
  )
  const commands = machine.applied.filter((entry) => entry.kind === 'command')
  assert.equal(
    commands.map((entry) => new TextDecoder().decode(entry.data)),
    ['a', 'b', 'c'],
  )
})

test('a state machine that proposes while applying does not break the one-Ready-at-a-time rule', () => {
  const { driver, machine, run } = setUp()
  run(2_000)
  let follow = 0
  machine.onApply = (entry) => {
    if (
      entry.kind === 'command' &&
      new TextDecoder().decode(entry.data) === 'first' &&
      follow++ === 0
    ) {
      driver.propose(bytes('second'), () => {})
    }
  }
  driver.propose(bytes('first'), () => {})
  run(200)
  const commands = machine.applied
    .filter((entry) => entry.kind === 'command')
    .map((entry) => new TextDecoder().decode(entry.data))
  assert.equal(commands, ['first', 'second'])
})

test('the log is compacted once enough entries were applied', () => {
  const { driver, writes, run } = setUp()
  run(2_000)
  for (let index = 0; index < 8; index++) driver.propose(bytes(`e${index}`), () => {})
  run(200)
  assert.ok(
    writes.some((batch) => batch.compaction !== null),
    'a compaction was written',
  )
})

test('the lease is held by the leader, in clock time, for the lease ticks', () => {
  const { driver, queue, run } = setUp()
  assert.is(driver.leaseExpiresAtMs(), null, 'no lease before leading')
  run(2_000)
  const expires = driver.leaseExpiresAtMs()
  assert.ok(expires !== null)
  const leaseMs = leaseTicksFor({ electionTicks: 10, clockDriftBound: 0.05 }) * TICK_MS
  assert.ok(
    expires > queue.nowMs && expires <= queue.nowMs + leaseMs,
    `expires ${expires} at ${queue.nowMs}`,
  )
})

test('a storage failure stops the driver and ends pending proposals', () => {
  let failing = false
  const { driver, fatal, run } = setUp((disk) => ({
    write: (batch, sync, done) =>
      failing ? done(new Error('disk full')) : disk.write(batch, sync, done),
  }))
  run(2_000)
  failing = true
  const outcomes: ProposalOutcome[] = []
  driver.propose(bytes('lost'), (outcome) => outcomes.push(outcome))
  run(100)
  assert.is(fatal[0]?.message, 'disk full')
  assert.ok(driver.stopped)
  assert.equal(outcomes, [{ ok: false, code: 'STOPPED', leader: null }])
})

test.run()
