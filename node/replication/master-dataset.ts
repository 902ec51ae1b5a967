// A master's side of one dataset: a first full scan, then real-time scoped scans of what
// the change watcher reports, one scan at a time, with the scopes that arrive meanwhile
// merged into the next one; the watcher's periodic rescan is the safety net.
import type Hypercore from 'hypercore'
import { ClusterError, isClusterError } from '../../consensus/cluster-error.ts'
import type { ScanResult } from '../../storage/dataset-scanner.ts'
import type { Dataset } from '../../storage/node-store.ts'
import { checkDatasetPath } from '../../storage/version-record.ts'
import { ChangeWatcher, type ChangeWatcherOptions } from './change-watcher.ts'

/** Past this many changed paths waiting, the next scan is a full one (the scanner's own bound is higher). */
export const PENDING_SCOPES_MAX = 2048
/**
 * Records per append in a scan of what the watcher reported: the replicas start on a burst
 * after this many files rather than the scanner's default, and its last files wait less.
 */
export const SCOPED_SCAN_BATCH_RECORDS_MAX = 64
/** A scan that failed (the directory is gone, the disk is full) is tried again after this. */
const SCAN_RETRY_MS = 5_000
/** The first scan of a large dataset reports progress this often. */
const PROGRESS_EVERY_MS = 2_000

export interface MasterDatasetOptions {
  readonly dataset: Dataset
  readonly directory: string
  readonly watcher?: Omit<ChangeWatcherOptions, 'onChanges' | 'onRescan' | 'onWarning'>
  readonly log: (line: string) => void
  /** Told after every scan that recorded something (the replicas follow the log by themselves). */
  readonly onScanned?: (result: ScanResult) => void
}

export class MasterDataset {
  readonly #options: MasterDatasetOptions
  #watcher: ChangeWatcher | null = null
  /** Null: the whole dataset; a set: only these paths. */
  #pending: Set<string> | null | undefined = undefined
  #scanning: Promise<void> | null = null
  #retryTimer: NodeJS.Timeout | null = null
  #stopped = false
  scansDone = 0

  constructor(options: MasterDatasetOptions) {
    this.#options = options
  }

  get id(): string {
    return this.#options.dataset.id
  }

  get directory(): string {
    return this.#options.directory
  }

  get logLength(): number {
    return this.#options.dataset.log.length
  }

  get keyHex(): string {
    return this.#options.dataset.log.keyHex
  }

  get core(): Hypercore {
    return this.#options.dataset.log.core
  }

  /** Watches first, then scans everything: nothing written in between is missed. */
  async start(): Promise<void> {
    const { directory, log } = this.#options
    this.#watcher = new ChangeWatcher(directory, {
      ...this.#options.watcher,
      onChanges: (paths) => this.#request(paths),
      onRescan: () => this.#request(null),
      onWarning: (warning) => log(`dataset ${this.id}: ${warning.message}`),
    })
    await this.#watcher.start()
    this.#request(null)
  }

  /** Resolves once no scan is running or waiting. */
  async idle(): Promise<void> {
    while (this.#scanning !== null) await this.#scanning
  }

  async stop(): Promise<void> {
    this.#stopped = true
    await this.#watcher?.close()
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer)
    await this.idle()
  }

  #request(paths: Set<string> | null): void {
    if (this.#stopped) return
    if (paths === null || this.#pending === null) this.#pending = null
    else {
      const pending = (this.#pending ??= new Set())
      for (const path of paths) {
        // A name the log cannot hold is the full scan's to warn about.
        if (checkDatasetPath(path) !== null) {
          this.#pending = null
          break
        }
        pending.add(path)
      }
      if (this.#pending !== null && this.#pending.size > PENDING_SCOPES_MAX) this.#pending = null
    }
    this.#scanning ??= this.#drain()
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending !== undefined && !this.#stopped) {
        const scopes = this.#pending
        this.#pending = undefined
        await this.#scan(scopes)
      }
    } finally {
      this.#scanning = null
    }
  }

  async #scan(scopes: Set<string> | null): Promise<void> {
    const { dataset, directory, log } = this.#options
    const full = scopes === null
    const startedMs = Date.now()
    let lastReportMs = startedMs
    let recorded = 0
    try {
      const result = await dataset.scan(directory, {
        ...(full ? {} : { scopes: [...scopes], batchRecordsMax: SCOPED_SCAN_BATCH_RECORDS_MAX }),
        onRecorded: (changes) => {
          recorded += changes.length
          if (full && Date.now() - lastReportMs >= PROGRESS_EVERY_MS) {
            lastReportMs = Date.now()
            log(`dataset ${this.id}: scanning, ${recorded} change(s) recorded so far`)
          }
        },
      })
      this.scansDone++
      for (const warning of result.warnings) log(`dataset ${this.id}: ${warning.message}`)
      if (result.changes.length > 0) {
        if (full)
          log(
            `dataset ${this.id}: scan recorded ${result.changes.length} change(s) in ${Date.now() - startedMs} ms`,
          )
        this.#options.onScanned?.(result)
      }
    } catch (error) {
      if (this.#stopped || isClusterError(error, 'CLOSED')) return
      const message = error instanceof ClusterError ? error.message : (error as Error).message
      log(`dataset ${this.id}: scan failed: ${message}; a full scan follows in ${SCAN_RETRY_MS} ms`)
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null
        this.#request(null)
      }, SCAN_RETRY_MS)
    }
  }
}
