// The simulated disk: writes complete in order; a crash keeps everything synced and at
// most a prefix of what was not, and drops writes still in flight.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { Entry } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { EventQueue } from '../../sim/event-queue.ts'
import { SeededRandom } from '../../sim/seeded-random.ts'
import { SimDisk } from '../../sim/sim-disk.ts'

const latency = { writeMsMin: 1, writeMsMax: 2, syncMsMin: 5, syncMsMax: 10 }
const entry = (index: number): Entry => ({
  index: logIndex(index),
  term: term(1),
  kind: 'command',
  data: new Uint8Array([index]),
})
const write = (disk: SimDisk, index: number, sync: boolean, done: number[]): void =>
  disk.write(
    { entries: [entry(index)], hardState: null, snapshot: null, compaction: null },
    sync,
    () => done.push(index),
  )

test('writes complete in call order, each after its latency', () => {
  const queue = new EventQueue()
  const disk = new SimDisk(queue, new SeededRandom(1), latency)
  const done: number[] = []
  for (let index = 1; index <= 5; index++) write(disk, index, index % 2 === 0, done)
  while (queue.runNext(Infinity));
  assert.equal(done, [1, 2, 3, 4, 5])
  assert.ok(queue.nowMs >= 5 + 2 * 5, 'synced writes take their sync time')
  assert.equal(
    disk.load().entries.map((e) => e.index),
    [1, 2, 3, 4, 5],
  )
})

test('a crash keeps what was synced and a prefix of the rest, and loses writes in flight', () => {
  const kept = new Set<number>()
  for (let seed = 1; seed <= 40; seed++) {
    const queue = new EventQueue()
    const disk = new SimDisk(queue, new SeededRandom(seed), latency)
    const done: number[] = []
    write(disk, 1, false, done)
    write(disk, 2, true, done)
    write(disk, 3, false, done)
    write(disk, 4, false, done)
    while (done.length < 4) queue.runNext(Infinity)
    write(disk, 5, true, done) // still in flight at the crash
    disk.crash()
    while (queue.runNext(Infinity));
    assert.equal(done, [1, 2, 3, 4], 'the in-flight write never completes')
    const indexes = disk.load().entries.map((e) => e.index)
    assert.ok(indexes.length >= 2 && indexes.length <= 4, `synced writes survive (${indexes})`)
    assert.equal(indexes, [1, 2, 3, 4].slice(0, indexes.length), 'a prefix survives')
    kept.add(indexes.length)
  }
  assert.equal([...kept].sort(), [2, 3, 4], 'every prefix length happens')
})

test('the hard state is written with the batch that carries it', () => {
  const queue = new EventQueue()
  const disk = new SimDisk(queue, new SeededRandom(3), latency)
  disk.write(
    {
      entries: [],
      hardState: { term: term(4), vote: nodeId('n2'), commit: logIndex(0) },
      snapshot: null,
      compaction: null,
    },
    true,
    () => {},
  )
  while (queue.runNext(Infinity));
  disk.crash()
  assert.equal(disk.load().hardState, { term: 4, vote: 'n2', commit: 0 })
})

test.run()
