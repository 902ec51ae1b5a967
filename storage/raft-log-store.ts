// The durable Raft log: hard state, entries and the latest snapshot in one abstract-level
// database (classic-level on disk, memory-level in fast tests). Every write is one atomic
// LevelDB batch, applied in call order; load() verifies every record and the shape of the
// whole log, and reports anything wrong as CORRUPT_STORE rather than repairing it.
import type { AbstractBatchOptions } from 'abstract-level'
import { ClassicLevel } from 'classic-level'
import { open as openFile } from 'node:fs/promises'
import { join } from 'node:path'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import type {
  Entry,
  HardState,
  LogIndex,
  RestoredState,
  Snapshot,
  Term,
} from '../consensus/types.ts'
import {
  DAMAGE_NOTE_KEY,
  decodeDamageNote,
  decodeEntry,
  decodeHardState,
  decodeSnapshot,
  describeKey,
  encodeDamageNote,
  parseKey,
} from './raft-record-codec.ts'
import { LOG_ENTRIES_MAX, RaftLogShape, snapshotMetaProblem } from './raft-log-shape.ts'
import type { LevelOperation } from './raft-log-shape.ts'
import type { RaftStorage, RaftWriteBatch } from './raft-storage.ts'

/** The most writes queued or in progress; the driver waits for `done` long before this. */
export const WRITES_IN_FLIGHT_MAX = 1024
/** How much of LevelDB's info log is searched; the messages of recovery come first. */
const LEVELDB_INFO_LOG_BYTES_MAX = 1024 * 1024
/** What LevelDB's info log says when recovery skipped a damaged write-ahead-log record. */
const LEVELDB_DROPPED_PATTERN = /dropping \d+ bytes; Corruption: [^\n]*/

const BYTES = { keyEncoding: 'view', valueEncoding: 'view' } as const

/**
 * The part of an abstract-level database the store uses. Keys and values are bytes, so the
 * database must store bytes faithfully (classic-level does, and memory-level by default).
 */
export interface RaftLevel {
  open(): Promise<void>
  close(): Promise<void>
  batch(
    operations: LevelOperation[],
    options: AbstractBatchOptions<Uint8Array, Uint8Array>,
  ): Promise<void>
  iterator(options: typeof BYTES): AsyncIterable<[Uint8Array, Uint8Array]>
}

const EMPTY_HARD_STATE: HardState = { term: 0 as Term, vote: null, commit: 0 as LogIndex }

export class RaftLogStore implements RaftStorage {
  private shape: RaftLogShape | null = null
  private loading = false
  private closing: Promise<void> | null = null
  private writesInFlight = 0
  /** Writes run one after another from this chain, which never rejects. */
  private tail: Promise<void> = Promise.resolve()
  /** Once a write fails, the shape may no longer match the disk: every later write fails too, until reopened. */
  private failure: Error | null = null

  private constructor(
    private readonly db: RaftLevel,
    private readonly name: string,
  ) {}

  /** Opens (creating if missing) a classic-level database at `directory`. */
  static async open(directory: string): Promise<RaftLogStore> {
    const store = await RaftLogStore.openLevel(
      new ClassicLevel(directory),
      `raft log store ${directory}`,
    )
    try {
      await store.noteDroppedData(directory)
    } catch (error) {
      await store.close()
      throw error
    }
    return store
  }

  /** Takes over `db` (opening it if needed); close() closes it. */
  static async fromLevel(db: RaftLevel): Promise<RaftLogStore> {
    return RaftLogStore.openLevel(db, 'raft log store')
  }

  private static async openLevel(db: RaftLevel, name: string): Promise<RaftLogStore> {
    try {
      await db.open()
    } catch (error) {
      throw levelError(`${name}: cannot open`, error)
    }
    return new RaftLogStore(db, name)
  }

  /** Reads and verifies the whole store; must complete before the first write. */
  async load(): Promise<RestoredState> {
    assert(this.closing === null, 'load() after close()')
    assert(this.writesInFlight === 0 && !this.loading, 'load() while writes or a load are running')
    this.loading = true
    try {
      const restored = await this.readAll()
      this.shape = new RaftLogShape(restored)
      return restored
    } finally {
      this.loading = false
    }
  }

  write(batch: RaftWriteBatch, sync: boolean, done: (error: Error | null) => void): void {
    if (this.closing !== null) {
      const error = ClusterError.closed(`${this.name}: write after close`)
      queueMicrotask(() => done(error))
      return
    }
    assert(this.shape !== null && !this.loading, 'write() before load() completed')
    assert(this.writesInFlight < WRITES_IN_FLIGHT_MAX, `more than ${WRITES_IN_FLIGHT_MAX} writes`)
    // After a failure the shape no longer matches the disk, so nothing is planned; the write
    // still goes through the queue so that every `done` fires in call order.
    let operations: LevelOperation[] = []
    try {
      if (this.failure === null) operations = this.shape.plan(batch)
    } catch (error) {
      // A half-planned batch left the shape unlike the disk.
      this.failure = ClusterError.io(`${this.name}: a write was refused`, error)
      throw error
    }
    this.writesInFlight++
    this.tail = this.tail
      .then(() => this.commit(operations, sync))
      .then((error) => {
        this.writesInFlight--
        // Outside the chain, so that a throwing callback cannot break it; microtasks keep call
        // order and run before close() resolves.
        queueMicrotask(() => done(error))
      })
  }

  /** Waits for queued writes (each still gets its `done`), then closes the database. */
  async close(): Promise<void> {
    this.closing ??= this.tail.then(() => this.db.close())
    return this.closing
  }

  /**
   * classic-level runs LevelDB without paranoid checks: when it opens, LevelDB skips a damaged
   * write-ahead-log record (and what follows it in that block), says so only in its info log,
   * then deletes the log. Acknowledged writes would vanish without a trace, so the store
   * looks at the info log of this open and leaves a note that every later load() reports.
   */
  private async noteDroppedData(directory: string): Promise<void> {
    let text: string
    try {
      const file = await openFile(join(directory, 'LOG'))
      try {
        const buffer = Buffer.alloc(LEVELDB_INFO_LOG_BYTES_MAX)
        const { bytesRead } = await file.read(buffer, 0, buffer.length, 0)
        text = buffer.toString('utf8', 0, bytesRead)
      } finally {
        await file.close()
      }
    } catch (error) {
      throw ClusterError.io(`${this.name}: cannot read LevelDB's info log`, error)
    }
    const dropped = LEVELDB_DROPPED_PATTERN.exec(text)
    if (dropped === null) return
    const note = encodeDamageNote(`LevelDB dropped data when it opened the store: ${dropped[0]}`)
    const operations: LevelOperation[] = [{ type: 'put', key: DAMAGE_NOTE_KEY, value: note }]
    const failure = await this.commit(operations, true)
    if (failure !== null) throw failure
  }

  private async commit(operations: LevelOperation[], sync: boolean): Promise<Error | null> {
    if (this.failure !== null) return this.failure
    try {
      // `sync` is a classic-level option; other databases ignore it.
      const options: AbstractBatchOptions<Uint8Array, Uint8Array> & { sync: boolean } = {
        ...BYTES,
        sync,
      }
      await this.db.batch(operations, options)
      return null
    } catch (error) {
      this.failure = levelError(`${this.name}: write failed`, error)
      return this.failure
    }
  }

  private async readAll(): Promise<RestoredState> {
    let hardState: HardState | null = null
    let snapshot: Snapshot | null = null
    const entries: Entry[] = []
    try {
      for await (const [key, value] of this.db.iterator(BYTES)) {
        const parsed = parseKey(key)
        const where = `${this.name}: ${describeKey(key)}`
        if (parsed.kind === 'hardState') hardState = decodeHardState(value, where)
        else if (parsed.kind === 'snapshot') snapshot = decodeSnapshot(value, where)
        else if (parsed.kind === 'entry')
          entries.push(nextEntry(entries, parsed.index, value, where))
        else if (parsed.kind === 'damageNote')
          throw ClusterError.corruptStore(`${this.name}: ${decodeDamageNote(value, where)}`)
        else throw ClusterError.corruptStore(`${where}: not a key this store writes`)
      }
    } catch (error) {
      throw levelError(`${this.name}: cannot read`, error)
    }
    const restored = { hardState: hardState ?? EMPTY_HARD_STATE, entries, snapshot }
    this.checkWhole(restored)
    return restored
  }

  private checkWhole({ hardState, entries, snapshot }: RestoredState): void {
    const corrupt = (problem: string) => ClusterError.corruptStore(`${this.name}: ${problem}`)
    const snapshotIndex = snapshot?.meta.index ?? 0
    const snapshotProblem = snapshot === null ? null : snapshotMetaProblem(snapshot.meta)
    if (snapshotProblem !== null) throw corrupt(`snapshot: ${snapshotProblem}`)
    const first = entries[0]
    if (first !== undefined && first.index !== snapshotIndex + 1)
      throw corrupt(`entry ${first.index}: the first entry must be ${snapshotIndex + 1}`)
    if (first !== undefined && snapshot !== null && first.term < snapshot.meta.term)
      throw corrupt(
        `entry ${first.index}: term ${first.term} is below the snapshot's ${snapshot.meta.term}`,
      )
    const lastIndex = entries.at(-1)?.index ?? snapshotIndex
    if (hardState.commit > lastIndex)
      throw corrupt(`hard state: commit ${hardState.commit} is beyond the last index ${lastIndex}`)
    if (hardState.vote === '') throw corrupt('hard state: a vote for an empty node id')
  }
}

/** Decodes the entry at `index`, checked against the entries before it (keys arrive in index order). */
function nextEntry(
  entries: readonly Entry[],
  index: LogIndex,
  value: Uint8Array,
  where: string,
): Entry {
  const entry = decodeEntry(value, where)
  const previous = entries.at(-1)
  const corrupt = (problem: string) => ClusterError.corruptStore(`${where}: ${problem}`)
  if (entry.index !== index) throw corrupt(`the record holds index ${entry.index}`)
  if (entry.term < 1) throw corrupt(`term ${entry.term}`)
  if (entries.length >= LOG_ENTRIES_MAX) throw corrupt(`more than ${LOG_ENTRIES_MAX} entries`)
  if (previous !== undefined && index !== previous.index + 1)
    throw corrupt(`gap: the entry before it is ${previous.index}`)
  if (previous !== undefined && entry.term < previous.term)
    throw corrupt(`term ${entry.term} after term ${previous.term} at entry ${previous.index}`)
  return entry
}

/** Keeps our own errors; maps LevelDB's corruption to CORRUPT_STORE and anything else to IO_ERROR. */
function levelError(context: string, error: unknown): ClusterError {
  if (isClusterError(error)) return error
  const causes = causeChain(error)
  const message = causes.map((cause) => cause.message).join(': ') || String(error)
  if (causes.some((cause) => (cause as { code?: unknown }).code === 'LEVEL_CORRUPTION'))
    return ClusterError.corruptStore(`${context}: ${message}`, error)
  return ClusterError.io(`${context}: ${message}`, error)
}

const CAUSE_DEPTH_MAX = 4

/** An abstract-level error and its causes: a failed open wraps the real reason. */
function causeChain(error: unknown): Error[] {
  const chain: Error[] = []
  let current = error
  while (current instanceof Error && chain.length < CAUSE_DEPTH_MAX) {
    chain.push(current)
    current = current.cause
  }
  return chain
}
