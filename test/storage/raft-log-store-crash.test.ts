// Kills a real writer process with SIGKILL at random moments — some while it writes a batch
// of large entries — and checks after each kill that the store loads and holds exactly the
// state after some batch at or beyond the last one the writer saw acknowledged.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { RestoredState } from '../../consensus/types.ts'
import { RaftLogStore } from '../../storage/raft-log-store.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { restoredOf, workloadStateAfter } from './fixtures/raft-log-workload.ts'
import type { WorkloadState } from './fixtures/raft-log-workload.ts'

const WRITER = fileURLToPath(new URL('./fixtures/raft-log-writer.ts', import.meta.url))
const ROUNDS = 12
const WRITES_IN_FLIGHT = 4
/** More than a writer can do before it is killed, so every round ends in a kill. */
const BATCHES_PER_ROUND_MAX = 20_000
const KILL_DELAY_MS_MAX = 250
const START_KILL_DELAY_MS_MAX = 1500
const ROUND_TIMEOUT_MS = 30_000
const SEED = Number(process.env['CRASH_TEST_SEED'] ?? Date.now() % 1_000_000)

/** mulberry32: a seeded generator, so that a failing run can be replayed with CRASH_TEST_SEED. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state)
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 2 ** 32
  }
}

type KillPlan =
  | { readonly when: 'afterStart'; readonly delayMs: number }
  | { readonly when: 'afterFirstAck'; readonly delayMs: number }
  | {
      readonly when: 'duringLargeBatch'
      readonly largeBatchesFirst: number
      readonly delayMs: number
    }

interface RoundOutcome {
  readonly lastAcked: number
  readonly killedDuringLargeBatch: boolean
}

/** Runs one writer from batch `first` and kills it by its pid as `plan` says. */
async function runWriter(directory: string, first: number, plan: KillPlan): Promise<RoundOutcome> {
  const last = first + BATCHES_PER_ROUND_MAX - 1
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', WRITER, directory, String(first), String(last), String(WRITES_IN_FLIGHT)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let lastAcked = first - 1
  let largeBatchesSeen = 0
  let killedDuringLargeBatch = false
  let outOfOrder: string | null = null
  let stderr = ''
  const timers: NodeJS.Timeout[] = []
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL')
  }
  child.stderr!.on('data', (data: Buffer) => (stderr += data.toString()))
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const [word, number] = line.split(' ')
    if (word === 'acked') {
      if (Number(number) !== lastAcked + 1) outOfOrder ??= `acked ${number} after ${lastAcked}`
      lastAcked = Number(number)
      if (plan.when === 'afterFirstAck' && lastAcked === first)
        timers.push(setTimeout(kill, plan.delayMs))
    } else if (word === 'large' && plan.when === 'duringLargeBatch') {
      largeBatchesSeen++
      if (largeBatchesSeen === plan.largeBatchesFirst) {
        timers.push(setTimeout(kill, plan.delayMs))
        killedDuringLargeBatch = true
      }
    }
  })
  if (plan.when === 'afterStart') timers.push(setTimeout(kill, plan.delayMs))
  timers.push(setTimeout(kill, ROUND_TIMEOUT_MS))
  try {
    const [code, signal] = await exited(child)
    assert.is(signal, 'SIGKILL', `the writer was killed, not ended (code ${code}): ${stderr}`)
    assert.is(outOfOrder, null, 'acknowledgements arrive in batch order')
  } finally {
    timers.forEach(clearTimeout)
    kill()
  }
  return { lastAcked, killedDuringLargeBatch }
}

function exited(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  return new Promise((resolve) => child.on('close', (code, signal) => resolve([code, signal])))
}

/** A log without its entry data (index/term/size per entry): enough to tell states apart. */
function outline(restored: RestoredState): string {
  const entries = restored.entries.map((each) => `${each.index}/${each.term}/${each.data.length}`)
  const snapshot = restored.snapshot?.meta ?? null
  return JSON.stringify({ hardState: restored.hardState, snapshot, entries })
}

function outlineOfState(state: WorkloadState): string {
  const entries = state.entries.map((each) => `${each.index}/${each.term}/${each.sizeBytes}`)
  return JSON.stringify({ hardState: state.hardState, snapshot: state.snapshot, entries })
}

/** The batch count in [lastAcked, lastAcked + WRITES_IN_FLIGHT] whose state the store holds. */
function matchingState(
  loaded: RestoredState,
  lastAcked: number,
): { sequence: number; state: WorkloadState } | null {
  for (let sequence = lastAcked; sequence <= lastAcked + WRITES_IN_FLIGHT; sequence++) {
    const state = workloadStateAfter(sequence)
    if (outlineOfState(state) === outline(loaded)) return { sequence, state }
  }
  return null
}

function killPlan(random: () => number, round: number): KillPlan {
  switch (round % 3) {
    case 0:
      return { when: 'afterFirstAck', delayMs: Math.floor(random() * KILL_DELAY_MS_MAX) }
    case 1: {
      // The writer prints `large N` just before encoding the batch; a few milliseconds later
      // it is encoding or writing 4 MiB.
      const largeBatchesFirst = 1 + Math.floor(random() * 3)
      return { when: 'duringLargeBatch', largeBatchesFirst, delayMs: Math.floor(random() * 20) }
    }
    default:
      // From before the writer has opened the store to well into its writing.
      return { when: 'afterStart', delayMs: Math.floor(random() * START_KILL_DELAY_MS_MAX) }
  }
}

test(`a writer killed with SIGKILL loses no acknowledged batch (seed ${SEED})`, async () => {
  const random = seededRandom(SEED)
  const directory = await makeTempDir()
  try {
    let sequence = 0
    let largeBatchKills = 0
    for (let round = 0; round < ROUNDS; round++) {
      const plan = killPlan(random, round)
      const outcome = await runWriter(directory, sequence + 1, plan)
      if (outcome.killedDuringLargeBatch) largeBatchKills++
      const store = await RaftLogStore.open(directory)
      try {
        const loaded = await store.load()
        const match = matchingState(loaded, outcome.lastAcked)
        assert.ok(
          match !== null,
          `round ${round} (${JSON.stringify(plan)}): after batch ${outcome.lastAcked} was ` +
            `acknowledged the store holds ${outline(loaded).slice(0, 400)}`,
        )
        // Same outline; now the bytes.
        assert.equal(loaded, restoredOf(match.state), `round ${round}: entry data differs`)
        sequence = match.sequence
      } finally {
        await store.close()
      }
    }
    assert.ok(sequence >= 50, `the writers got through ${sequence} batches in ${ROUNDS} rounds`)
    assert.ok(largeBatchKills >= 1, 'at least one kill landed while large entries were written')
  } finally {
    await removeDir(directory)
  }
})

test.run()
