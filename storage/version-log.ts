// One dataset's version log: a Hypercore in the node's Corestore, signed by the master.
// The master opens its own log by dataset id (writable, the key derived from the store's
// primary key); a replica opens the master's log by key (read-only, filled by replication)
// and reads it through the same interface, so indexing and mirroring are the same code.
import type Corestore from 'corestore'
import type Hypercore from 'hypercore'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import { decodeRecord, encodeRecord } from './version-record-codec.ts'
import {
  logSeq,
  type DatasetId,
  type LogSeq,
  type RecordDraft,
  type VersionRecord,
} from './version-record.ts'

/** One atomic Hypercore append carries at most this many bytes; longer appends are split. */
export const APPEND_BATCH_BYTES_MAX = 16 * 1024 * 1024
/** One append call carries at most this many records. */
export const APPEND_RECORDS_MAX = 16 * 1024

/** What indexing, reading and mirroring need from a log; the simulator can model it. */
export interface VersionLogReader {
  /** The log's public key, 64 hex characters: names the log everywhere. */
  readonly keyHex: string
  /** Records readable here without waiting, contiguous from seq 0. */
  readonly length: number
  /** NOT_FOUND beyond `length`, BAD_MESSAGE when the stored record is invalid. */
  read(seq: LogSeq): Promise<VersionRecord>
  /** A digest of the first `length` records: equal digests mean equal prefixes. */
  fingerprint(length: number): Promise<string>
  /** Resolves once `length` records are readable (a live tail); CLOSED if the log closes first. */
  waitForLength(length: number, signal?: AbortSignal): Promise<void>
}

export interface VersionLogWriter extends VersionLogReader {
  /** Appends the records in order; records of one batch of at most APPEND_BATCH_BYTES_MAX land atomically. */
  append(drafts: readonly RecordDraft[]): Promise<{ firstSeq: LogSeq; length: number }>
}

const EMPTY_FINGERPRINT = 'empty'
/**
 * Decoded records kept for reading again: a replica's chunk sync, its index and its mirror
 * each read every new record, and each read was a storage read and a decode. Records never
 * change once in the log, so a kept one is always right.
 */
export const RECORD_CACHE_RECORDS_MAX = 4096
export const RECORD_CACHE_BYTES_MAX = 16 * 1024 * 1024

/** Recently read or appended records by seq, least recently used first. */
class RecordCache {
  readonly #records = new Map<number, { record: VersionRecord; bytes: number }>()
  #bytes = 0

  get(seq: number): VersionRecord | undefined {
    const kept = this.#records.get(seq)
    if (kept === undefined) return undefined
    this.#records.delete(seq)
    this.#records.set(seq, kept)
    return kept.record
  }

  set(seq: number, record: VersionRecord, bytes: number): void {
    if (bytes > RECORD_CACHE_BYTES_MAX || this.#records.has(seq)) return
    this.#records.set(seq, { record, bytes })
    this.#bytes += bytes
    for (const [oldest, kept] of this.#records) {
      if (this.#records.size <= RECORD_CACHE_RECORDS_MAX && this.#bytes <= RECORD_CACHE_BYTES_MAX)
        break
      this.#records.delete(oldest)
      this.#bytes -= kept.bytes
    }
  }
}

export class VersionLog implements VersionLogWriter {
  readonly core: Hypercore
  private readonly nowMs: () => number
  private lastRecordedAtMs = 0
  private readonly download: { destroy(): void } | null
  private readonly cache = new RecordCache()

  private constructor(core: Hypercore, nowMs: () => number, download: { destroy(): void } | null) {
    this.core = core
    this.nowMs = nowMs
    this.download = download
  }

  /** The master's own, writable log for a dataset. */
  static async openOwn(
    store: Corestore,
    datasetId: DatasetId,
    options: { nowMs?: () => number } = {},
  ): Promise<VersionLog> {
    const core = store.get({ name: `dataset/${datasetId}` })
    await ready(core)
    const log = new VersionLog(core, options.nowMs ?? Date.now, null)
    if (log.length > 0) {
      // Stamps never go backwards, even when the clock does between runs.
      const last = await log.read(logSeq(log.length - 1)).catch(() => null)
      log.lastRecordedAtMs = last?.recordedAtMs ?? 0
    }
    return log
  }

  /** Another master's log, by key: read-only, filled by replication as peers provide it. */
  static async openReplica(store: Corestore, key: Uint8Array): Promise<VersionLog> {
    if (key.byteLength !== 32) throw ClusterError.badArgument('a version log key has 32 bytes')
    const core = store.get({ key, writable: false })
    await ready(core)
    // Ask for every block, now and as the log grows, from whichever peer is attached later.
    const download = core.download({ start: 0, end: -1 })
    return new VersionLog(core, Date.now, download)
  }

  get keyHex(): string {
    return this.core.key.toString('hex')
  }

  get writable(): boolean {
    return this.core.writable
  }

  get length(): number {
    return this.core.contiguousLength
  }

  async read(seq: LogSeq): Promise<VersionRecord> {
    assert(Number.isSafeInteger(seq) && seq >= 0, 'a log seq is a non-negative integer')
    if (seq >= this.length)
      throw ClusterError.notFound(
        `version log record ${seq} is not available (length ${this.length})`,
      )
    const kept = this.cache.get(seq)
    if (kept !== undefined) return kept
    const block = await hypercoreCall(() => this.core.get(seq, { wait: false }))
    if (block === null) throw ClusterError.notFound(`version log record ${seq} is not stored here`)
    const record = decodeRecord(block)
    this.cache.set(seq, record, block.byteLength)
    return record
  }

  async fingerprint(length: number): Promise<string> {
    if (!(Number.isSafeInteger(length) && length >= 0 && length <= this.core.length))
      throw ClusterError.badArgument(
        `cannot fingerprint ${length} records of a log of ${this.core.length}`,
      )
    if (length === 0) return EMPTY_FINGERPRINT
    const hash = await hypercoreCall(() => this.core.treeHash(length))
    return hash.toString('hex')
  }

  async append(drafts: readonly RecordDraft[]): Promise<{ firstSeq: LogSeq; length: number }> {
    if (!this.writable) throw ClusterError.refused('this version log is read-only here')
    if (drafts.length === 0 || drafts.length > APPEND_RECORDS_MAX)
      throw ClusterError.badArgument(`append takes 1..${APPEND_RECORDS_MAX} records`)
    const recordedAtMs = Math.max(Math.floor(this.nowMs()), this.lastRecordedAtMs)
    const blocks = drafts.map((draft) => encodeRecord({ ...draft, recordedAtMs } as VersionRecord))
    const firstSeq = logSeq(this.core.length)
    let batch: Uint8Array[] = []
    let batchBytes = 0
    for (const block of blocks) {
      if (batch.length > 0 && batchBytes + block.byteLength > APPEND_BATCH_BYTES_MAX) {
        await this.appendBlocks(batch)
        batch = []
        batchBytes = 0
      }
      batch.push(block)
      batchBytes += block.byteLength
    }
    const { length } = await this.appendBlocks(batch)
    this.lastRecordedAtMs = recordedAtMs
    assert(length === firstSeq + blocks.length, 'the log grew by exactly the appended records')
    // Kept as a reader decodes them, so that a cached record is exactly what a read gives.
    blocks.forEach((block, index) =>
      this.cache.set(firstSeq + index, decodeRecord(block), block.byteLength),
    )
    return { firstSeq, length }
  }

  waitForLength(length: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.length >= length) finish(null)
        else if (this.core.closed) finish(ClusterError.closed('version log closed'))
        else if (signal?.aborted === true)
          finish(ClusterError.closed('stopped waiting for the version log'))
      }
      const finish = (error: Error | null): void => {
        this.core.off('append', check)
        this.core.off('download', check)
        this.core.off('close', check)
        signal?.removeEventListener('abort', check)
        if (error === null) resolve()
        else reject(error)
      }
      // A replica's readable length grows on 'download'; the writer's on 'append'.
      this.core.on('append', check)
      this.core.on('download', check)
      this.core.on('close', check)
      signal?.addEventListener('abort', check)
      check()
    })
  }

  async close(): Promise<void> {
    this.download?.destroy()
    await this.core.close()
  }

  private appendBlocks(blocks: readonly Uint8Array[]): Promise<{ length: number }> {
    return hypercoreCall(() => this.core.append(blocks))
  }
}

async function ready(core: Hypercore): Promise<void> {
  await hypercoreCall(() => core.ready())
}

/** Hypercore's own errors become ClusterErrors with a code callers can match. */
async function hypercoreCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    if (isClusterError(error)) throw error
    const code = (error as { code?: unknown }).code
    if (code === 'SESSION_CLOSED') throw ClusterError.closed('version log closed')
    throw ClusterError.io(`version log: ${(error as Error).message}`, error)
  }
}
