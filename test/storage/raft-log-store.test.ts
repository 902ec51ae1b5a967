import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { crc32 } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { MemoryLevel } from 'memory-level'
import { AssertionFailure } from '../../consensus/assert.ts'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { Entry, LogIndex, RestoredState } from '../../consensus/types.ts'
import { RaftLogStore, WRITES_IN_FLIGHT_MAX } from '../../storage/raft-log-store.ts'
import { WRITE_ENTRIES_MAX } from '../../storage/raft-log-shape.ts'
import {
  encodeEntry,
  encodeHardState,
  encodeSnapshot,
  entryKey,
  HARD_STATE_KEY,
  SNAPSHOT_KEY,
} from '../../storage/raft-record-codec.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { batch, entries, entry, hardState, snapshot, write } from './fixtures/raft-log-builders.ts'

const BYTES = { keyEncoding: 'view', valueEncoding: 'view' } as const

/** A store on one backend, reopenable, cleaned up by `withStore`. */
interface Harness {
  store: RaftLogStore
  /** Closes the store, opens the same data again and loads it. */
  reopen(): Promise<RestoredState>
}

/** Where a store's data lives: `open` may be called again after the store is closed. */
interface Backend {
  open(): Promise<RaftLogStore>
  dispose(): Promise<void>
}

const backends: Record<string, () => Promise<Backend>> = {
  'memory-level': async () => {
    const db = new MemoryLevel()
    return { open: () => RaftLogStore.fromLevel(db), dispose: async () => {} }
  },
  'classic-level': async () => {
    const directory = await makeTempDir()
    return { open: () => RaftLogStore.open(directory), dispose: () => removeDir(directory) }
  },
}

async function withBackend(
  makeBackend: () => Promise<Backend>,
  body: (harness: Harness) => Promise<void>,
): Promise<void> {
  const backend = await makeBackend()
  try {
    const harness: Harness = {
      store: await backend.open(),
      async reopen() {
        await harness.store.close()
        harness.store = await backend.open()
        return harness.store.load()
      },
    }
    try {
      await body(harness)
    } finally {
      await harness.store.close()
    }
  } finally {
    await backend.dispose()
  }
}

const EMPTY: RestoredState = { hardState: hardState(0, null, 0), entries: [], snapshot: null }

for (const [name, makeBackend] of Object.entries(backends)) {
  const withStore = (body: (harness: Harness) => Promise<void>) => withBackend(makeBackend, body)

  test(`${name}: an empty store loads as term 0, no vote, commit 0, nothing else`, () =>
    withStore(async ({ store }) => {
      assert.equal(await store.load(), EMPTY)
    }))

  test(`${name}: hard state and entries of every kind survive a reopen exactly`, () =>
    withStore(async (harness) => {
      await harness.store.load()
      const logged = [
        entry(1, 1),
        entry(2, 2, new Uint8Array(randomBytes(300_000)), 'config'),
        entry(3, 3, new Uint8Array(0), 'noop'),
      ]
      await write(harness.store, { hardState: hardState(3, 'n2', 2), entries: logged })
      const expected = { hardState: hardState(3, 'n2', 2), entries: logged, snapshot: null }
      assert.equal(await harness.store.load(), expected)
      assert.equal(await harness.reopen(), expected)
    }))

  test(`${name}: entries written at an existing index replace that suffix`, () =>
    withStore(async (harness) => {
      await harness.store.load()
      await write(harness.store, { entries: entries(1, 5, 1) })
      await write(harness.store, { entries: entries(3, 4, 2) })
      const expected = [...entries(1, 2, 1), ...entries(3, 4, 2)]
      assert.equal((await harness.reopen()).entries, expected)
      await write(harness.store, { entries: [entry(5, 3)] })
      assert.equal((await harness.reopen()).entries, [...expected, entry(5, 3)])
    }))

  test(`${name}: an installed snapshot keeps the entries after it only when the log matches it`, () =>
    withStore(async (harness) => {
      await harness.store.load()
      await write(harness.store, { entries: entries(1, 10, 1) })
      await write(harness.store, { snapshot: snapshot(5, 1), hardState: hardState(1, null, 5) })
      let loaded = await harness.reopen()
      assert.equal(loaded.snapshot, snapshot(5, 1))
      assert.equal(loaded.entries, entries(6, 10, 1))

      await write(harness.store, { snapshot: snapshot(7, 2), hardState: hardState(2, null, 7) })
      loaded = await harness.reopen()
      assert.equal(loaded.snapshot, snapshot(7, 2))
      assert.equal(loaded.entries, [], 'a snapshot that does not match drops every entry')

      await write(harness.store, { entries: entries(8, 9, 2) })
      await write(harness.store, { snapshot: snapshot(20, 3), hardState: hardState(3, null, 20) })
      await write(harness.store, { entries: [entry(21, 3)] })
      loaded = await harness.reopen()
      assert.equal(loaded.snapshot, snapshot(20, 3))
      assert.equal(loaded.entries, [entry(21, 3)], 'a snapshot beyond the log replaces all of it')
    }))

  test(`${name}: compaction stores the snapshot and deletes the entries it covers`, () =>
    withStore(async (harness) => {
      await harness.store.load()
      await write(harness.store, { entries: entries(1, 10, 1), hardState: hardState(1, 'n1', 8) })
      await write(harness.store, { compaction: snapshot(6, 1) })
      let loaded = await harness.reopen()
      assert.equal(loaded, {
        hardState: hardState(1, 'n1', 8),
        entries: entries(7, 10, 1),
        snapshot: snapshot(6, 1),
      })
      await write(harness.store, { compaction: snapshot(10, 1), hardState: hardState(1, 'n1', 10) })
      await write(harness.store, { entries: [entry(11, 2)] })
      loaded = await harness.reopen()
      assert.equal(loaded.snapshot, snapshot(10, 1))
      assert.equal(loaded.entries, [entry(11, 2)])
    }))

  test(`${name}: snapshot, compaction, entries and hard state in one batch apply in that order`, () =>
    withStore(async (harness) => {
      await harness.store.load()
      await write(harness.store, { entries: entries(1, 4, 1) })
      await write(harness.store, {
        snapshot: snapshot(6, 2),
        compaction: snapshot(6, 2, ['n1'], ['n4']),
        entries: entries(7, 8, 2),
        hardState: hardState(2, 'n1', 6),
      })
      assert.equal(await harness.reopen(), {
        hardState: hardState(2, 'n1', 6),
        entries: entries(7, 8, 2),
        snapshot: snapshot(6, 2, ['n1'], ['n4']),
      })
    }))

  test(`${name}: writes issued before earlier ones completed apply and complete in call order`, () =>
    withStore(async (harness) => {
      await harness.store.load()
      const WRITES = 200
      const expected: Entry[] = []
      const completed: number[] = []
      const pending: Promise<Error | null>[] = []
      for (let sequence = 1; sequence <= WRITES; sequence++) {
        const term = 1 + Math.floor(sequence / 10)
        // Every fifth write overwrites the last two entries, which only works if the writes
        // before it have landed.
        const first = sequence % 5 === 0 ? expected.length - 1 : expected.length + 1
        const written = entries(first, first + 1, term)
        expected.splice(first - 1, expected.length, ...written)
        const parts = batch({ entries: written, hardState: hardState(term, null, first) })
        pending.push(
          new Promise((resolve) =>
            harness.store.write(parts, sequence % 2 === 0, (error) => {
              completed.push(sequence)
              resolve(error)
            }),
          ),
        )
      }
      assert.equal(await Promise.all(pending), new Array(WRITES).fill(null))
      assert.equal(
        completed,
        [...Array(WRITES).keys()].map((offset) => offset + 1),
      )
      const loaded = await harness.reopen()
      assert.equal(loaded.entries, expected)
      assert.equal(loaded.hardState.commit, expected.length - 1)
    }))
}

// ---- the Raft core's side of the contract --------------------------------------------------

async function loadedMemoryStore(): Promise<RaftLogStore> {
  const store = await RaftLogStore.fromLevel(new MemoryLevel())
  await store.load()
  await write(store, { entries: entries(1, 3, 2), hardState: hardState(2, 'n1', 2) })
  return store
}

test('write before load is a programmer error', async () => {
  const store = await RaftLogStore.fromLevel(new MemoryLevel())
  assert.throws(() => store.write(batch({ entries: [entry(1, 1)] }), true, () => {}), /load\(\)/)
  await store.close()
})

const contractBreaches: Record<string, Parameters<typeof batch>[0]> = {
  'a gap before the entries': { entries: [entry(5, 2)] },
  'entries over the snapshot point': { compaction: snapshot(2, 2), entries: [entry(2, 2)] },
  'a term that goes down': { entries: [entry(4, 1)] },
  'a compaction beyond the log': { compaction: snapshot(4, 2) },
  'a compaction whose term the log does not have': { compaction: snapshot(3, 1) },
  'a commit beyond the log': { hardState: hardState(2, 'n1', 4) },
  'a truncation below the commit': { entries: [entry(1, 3)] },
  'an inconsistent snapshot': { snapshot: snapshot(5, 3, ['n1'], ['n1']) },
  'more entries than one write may append': { entries: entries(4, 4 + WRITE_ENTRIES_MAX, 2) },
}

for (const [breach, parts] of Object.entries(contractBreaches)) {
  test(`a batch with ${breach} fails an assertion and the store refuses later writes`, async () => {
    const store = await loadedMemoryStore()
    assert.throws(
      () => store.write(batch(parts), true, () => {}),
      (error: unknown) => error instanceof AssertionFailure,
    )
    const later = await write(store, { hardState: hardState(3, null, 2) }).catch((error) => error)
    assert.ok(isClusterError(later, 'IO_ERROR'), String(later))
    assert.match(later.message, /a write was refused/)
    await store.close()
  })
}

test('a write after close completes with CLOSED', async () => {
  const store = await loadedMemoryStore()
  await store.close()
  const error = await write(store, { hardState: hardState(3, null, 2) }).catch((error) => error)
  assert.ok(isClusterError(error, 'CLOSED'), String(error))
})

test('close waits for queued writes, each of which still completes', async () => {
  const store = await loadedMemoryStore()
  const completions = [4, 5, 6].map((index) => write(store, { entries: [entry(index, 2)] }))
  await store.close()
  assert.equal(await Promise.all(completions), [undefined, undefined, undefined])
})

test('a failed database write gives IO_ERROR to it and to every write after it, in order', async () => {
  const db = new MemoryLevel()
  const store = await RaftLogStore.fromLevel(db)
  await store.load()
  await db.close() // the database goes away underneath the store
  const outcomes: string[] = []
  const record = (label: string) => (error: Error | null) =>
    outcomes.push(`${label} ${isClusterError(error, 'IO_ERROR') ? 'IO_ERROR' : String(error)}`)
  store.write(batch({ entries: [entry(1, 1)] }), true, record('first'))
  store.write(batch({ entries: [entry(2, 1)] }), true, record('second'))
  await store.close()
  assert.equal(outcomes, ['first IO_ERROR', 'second IO_ERROR'])
})

test(`more than ${WRITES_IN_FLIGHT_MAX} writes in flight is a programmer error`, async () => {
  const store = await loadedMemoryStore()
  const queued: Promise<void>[] = []
  for (let count = 0; count < WRITES_IN_FLIGHT_MAX; count++)
    queued.push(write(store, { hardState: hardState(3, null, 2) }, false))
  assert.throws(
    () => store.write(batch({ hardState: hardState(3, null, 2) }), false, () => {}),
    new RegExp(`more than ${WRITES_IN_FLIGHT_MAX} writes`),
  )
  await Promise.all(queued)
  await store.close()
})

test('opening a directory another store holds fails with IO_ERROR naming it', async () => {
  const directory = await makeTempDir()
  const first = await RaftLogStore.open(directory)
  try {
    const error = await RaftLogStore.open(directory).catch((error) => error)
    assert.ok(isClusterError(error, 'IO_ERROR'), String(error))
    assert.ok(error.message.includes(directory), error.message)
    assert.not.match(error.message, /\n/)
  } finally {
    await first.close()
    await removeDir(directory)
  }
})

// ---- corruption ----------------------------------------------------------------------------

/** Entries 3..6 (terms 2, 2, 3, 3) after a snapshot at 2 (term 1), commit 5. */
async function seededDatabase(): Promise<MemoryLevel> {
  const db = new MemoryLevel()
  const store = await RaftLogStore.fromLevel(db)
  await store.load()
  const log = [entry(1, 1), entry(2, 1), ...entries(3, 4, 2), ...entries(5, 6, 3)]
  await write(store, { entries: log, hardState: hardState(3, 'n1', 5) })
  await write(store, { compaction: snapshot(2, 1) })
  await store.close()
  await db.open()
  return db
}

const at = (index: number) => entryKey(index as LogIndex)

async function rawGet(db: MemoryLevel, key: Uint8Array): Promise<Uint8Array> {
  const value = await db.get<Uint8Array, Uint8Array>(key, BYTES)
  assert.ok(value !== undefined, 'the seeded key exists')
  return new Uint8Array(value)
}

/** A copy of `record` with one byte changed (not the checksum, so it no longer matches). */
function flipped(record: Uint8Array, offset: number): Uint8Array {
  const copy = new Uint8Array(record)
  copy[offset] = copy[offset]! ^ 0x5a
  return copy
}

/** A damaged record whose checksum was recomputed, so that the damage inside gets noticed. */
function resealed(record: Uint8Array, change: (body: Uint8Array) => Uint8Array): Uint8Array {
  const body = change(new Uint8Array(record.subarray(0, record.length - 4)))
  const sealed = new Uint8Array(body.length + 4)
  sealed.set(body)
  new DataView(sealed.buffer).setUint32(body.length, crc32(body))
  return sealed
}

type Damage = (db: MemoryLevel) => Promise<void>

const put = (key: Uint8Array, value: Uint8Array) => (db: MemoryLevel) =>
  db.put<Uint8Array, Uint8Array>(key, value, BYTES)
const edit =
  (key: Uint8Array, change: (record: Uint8Array) => Uint8Array): Damage =>
  async (db) =>
    put(key, change(await rawGet(db, key)))(db)
const copy =
  (from: Uint8Array, to: Uint8Array): Damage =>
  async (db) =>
    put(to, await rawGet(db, from))(db)

const damages: Record<string, [Damage, RegExp]> = {
  'an entry overwritten with garbage': [
    put(at(4), new TextEncoder().encode('garbage, not a record')),
    /: entry 4: checksum mismatch/,
  ],
  'an entry cut short': [put(at(4), Uint8Array.of(1, 3)), /: entry 4: record of 2 bytes/],
  'a flipped byte in an entry': [
    edit(at(5), (record) => flipped(record, 12)),
    /: entry 5: checksum mismatch/,
  ],
  'a flipped byte in the hard state': [
    edit(HARD_STATE_KEY, (record) => flipped(record, 3)),
    /: hard state: checksum mismatch/,
  ],
  'a flipped byte in the snapshot': [
    edit(SNAPSHOT_KEY, (record) => flipped(record, 20)),
    /: snapshot: checksum mismatch/,
  ],
  'an entry record under another index': [
    copy(at(4), at(5)),
    /: entry 5: the record holds index 4/,
  ],
  'a missing entry': [(db) => db.del(at(4), BYTES), /: entry 5: gap: the entry before it is 3/],
  'a missing first entry': [(db) => db.del(at(3), BYTES), /: entry 4: the first entry must be 3/],
  'a term that goes down': [
    put(at(5), encodeEntry(entry(5, 1))),
    /: entry 5: term 1 after term 2 at entry 4/,
  ],
  'an entry of term 0': [put(at(3), encodeEntry(entry(3, 0))), /: entry 3: term 0/],
  'a first entry below the snapshot term': [
    put(SNAPSHOT_KEY, encodeSnapshot(snapshot(2, 3))),
    /: entry 3: term 2 is below the snapshot's 3/,
  ],
  'a commit beyond the log': [
    put(HARD_STATE_KEY, encodeHardState(hardState(3, 'n1', 9))),
    /: hard state: commit 9 is beyond the last index 6/,
  ],
  'a vote for an empty node id': [
    put(HARD_STATE_KEY, encodeHardState(hardState(3, '', 5))),
    /: hard state: a vote for an empty node id/,
  ],
  'a node twice in the snapshot membership': [
    put(SNAPSHOT_KEY, encodeSnapshot(snapshot(2, 1, ['n1', 'n2'], ['n1']))),
    /: snapshot: node n1 listed twice/,
  ],
  'a snapshot at index 0 with a term': [
    put(SNAPSHOT_KEY, encodeSnapshot(snapshot(0, 3))),
    /: snapshot: index 0 with term 3/,
  ],
  'a key the store never writes': [
    put(Uint8Array.of(0x7a), Uint8Array.of(1)),
    /: unknown key 0x7a: not a key this store writes/,
  ],
  'an unknown record format version': [
    edit(at(3), (record) => resealed(record, (body) => ((body[0] = 9), body))),
    /: entry 3: record format version 9, expected 1/,
  ],
  'a hard state record under the snapshot key': [
    copy(HARD_STATE_KEY, SNAPSHOT_KEY),
    /: snapshot: record type 1, expected 2/,
  ],
  'a length field that runs past the record': [
    // The data length of an entry sits after version, type, index, term and kind.
    edit(at(3), (record) =>
      resealed(record, (body) => (new DataView(body.buffer).setUint32(19, 1_000_000), body)),
    ),
    /: entry 3: data runs past the end of the record/,
  ],
  'bytes after the last field': [
    edit(at(3), (record) => resealed(record, (body) => Uint8Array.of(...body, 7, 7))),
    /: entry 3: 2 unexpected bytes after the last field/,
  ],
  'an invalid UTF-8 vote': [
    // The vote is the last field: a count of 1, a length, then the id's bytes.
    edit(HARD_STATE_KEY, (record) =>
      resealed(record, (body) => ((body[body.length - 1] = 0xff), body)),
    ),
    /: hard state: vote id 0 is not valid UTF-8/,
  ],
}

async function contents(db: MemoryLevel): Promise<[string, string][]> {
  const found: [string, string][] = []
  for await (const [key, value] of db.iterator<Uint8Array, Uint8Array>(BYTES))
    found.push([Buffer.from(key).toString('hex'), Buffer.from(value).toString('hex')])
  return found
}

test('the seeded database loads cleanly', async () => {
  const store = await RaftLogStore.fromLevel(await seededDatabase())
  const loaded = await store.load()
  assert.equal(
    loaded.entries.map((each) => each.index),
    [3, 4, 5, 6],
  )
  await store.close()
})

for (const [name, [damage, message]] of Object.entries(damages)) {
  test(`${name} fails load with CORRUPT_STORE, and nothing is repaired`, async () => {
    const db = await seededDatabase()
    await damage(db)
    const before = await contents(db)
    const store = await RaftLogStore.fromLevel(db)
    const error = await store.load().catch((error) => error)
    assert.ok(isClusterError(error, 'CORRUPT_STORE'), String(error))
    assert.match(error.message, message)
    assert.not.match(error.message, /\n/)
    assert.equal(await contents(db), before)
    await store.close()
  })
}

test('classic-level: a record damaged on disk is reported after a reopen', async () => {
  const directory = await makeTempDir()
  try {
    const store = await RaftLogStore.open(directory)
    await store.load()
    await write(store, { entries: entries(1, 3, 1), hardState: hardState(1, null, 3) })
    await store.close()
    const db = new ClassicLevel<Uint8Array, Uint8Array>(directory, BYTES)
    const record = (await db.get(at(2)))!
    await db.put(at(2), flipped(new Uint8Array(record), 8))
    await db.close()
    const reopened = await RaftLogStore.open(directory)
    const error = await reopened.load().catch((error) => error)
    await reopened.close()
    assert.ok(isClusterError(error, 'CORRUPT_STORE'), String(error))
    assert.match(error.message, new RegExp(`raft log store ${directory}: entry 2: checksum`))
  } finally {
    await removeDir(directory)
  }
})

test('classic-level: a write-ahead-log record LevelDB skips as damaged is reported on every later load', async () => {
  const directory = await makeTempDir()
  try {
    const store = await RaftLogStore.open(directory)
    await store.load()
    for (let index = 1; index <= 5; index++)
      await write(store, { entries: [entry(index, 1)], hardState: hardState(1, null, index) })
    await store.close()
    // The batches are still only in LevelDB's write-ahead log: damage its middle.
    const logName = (await readdir(directory)).find((name) => name.endsWith('.log'))!
    const bytes = await readFile(join(directory, logName))
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff
    await writeFile(join(directory, logName), bytes)
    for (const attempt of ['first', 'second']) {
      const reopened = await RaftLogStore.open(directory)
      const error = await reopened.load().catch((error) => error)
      await reopened.close()
      assert.ok(isClusterError(error, 'CORRUPT_STORE'), `${attempt} open: ${String(error)}`)
      assert.match(error.message, /LevelDB dropped data .*Corruption: checksum mismatch/)
    }
  } finally {
    await removeDir(directory)
  }
})

test.run()
