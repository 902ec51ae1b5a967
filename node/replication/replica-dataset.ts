// A replica's side of one dataset: live log replication sessions with the dataset's other
// holders (kept open, reopened when they end), the chunk sync that completes what the log
// names, and, where the topology asks for one, a live mirror brought up to every newly
// completed length.
import type Hypercore from 'hypercore'
import { setTimeout as sleep } from 'node:timers/promises'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkStoreApi } from '../../storage/chunk-types.ts'
import { Mirror } from '../../storage/mirror.ts'
import type { Dataset } from '../../storage/node-store.ts'
import type { LogReplication, ReplicationSession } from '../wire/log-replication.ts'
import { ReplicaSync, type ChunkFetch } from './replica-sync.ts'

/** A replication session that ended is reopened after this pause (the peer may be restarting). */
const SESSION_RETRY_MS = 1_000
/** A failed index or mirror update is tried again after this pause. */
const APPLY_RETRY_MS = 1_000

export interface ReplicaDatasetOptions {
  readonly dataset: Dataset
  /** The node's chunk store: the mirror patches big files in place from it. */
  readonly chunkStore: Pick<ChunkStoreApi, 'get'>
  readonly fetcher: ChunkFetch
  readonly logReplication: LogReplication
  /** Peers to fetch chunks from, best first: the master, then the other replicas. */
  readonly chunkSources: () => readonly string[]
  /** Peers this node opens log sessions with (the others open theirs to it). */
  readonly sessionPeers: () => readonly string[]
  readonly mirrorDirectory: string | null
  readonly log: (line: string) => void
}

export interface ReplicaProgress {
  readonly logLength: number
  readonly completeLength: number
  readonly bytesPending: number
  readonly bytesFetched: number
  readonly mirroredLength: number | null
}

export class ReplicaDataset {
  readonly #options: ReplicaDatasetOptions
  readonly #abort = new AbortController()
  readonly #sessions = new Map<string, ReplicationSession>()
  readonly #sync: ReplicaSync
  #mirror: Mirror | null = null
  #running: Promise<unknown> | null = null
  /** The complete length the index and the mirror are to reach. */
  #applyTarget = 0
  #wakeApply: (() => void) | null = null

  constructor(options: ReplicaDatasetOptions) {
    this.#options = options
    // What an earlier run completed is indexed and mirrored first thing.
    this.#applyTarget = options.dataset.completeLength ?? 0
    this.#sync = new ReplicaSync({
      log: options.dataset.log,
      fetcher: options.fetcher,
      sources: options.chunkSources,
      startLength: options.dataset.completeLength ?? 0,
      onComplete: (length) => this.#completed(length),
      onWarning: (message) => options.log(`dataset ${this.id}: ${message}`),
    })
  }

  get id(): string {
    return this.#options.dataset.id
  }

  get mirrorDirectory(): string | null {
    return this.#options.mirrorDirectory
  }

  get core(): Hypercore {
    return this.#options.dataset.log.core
  }

  progress(): ReplicaProgress {
    return {
      logLength: this.#options.dataset.log.length,
      completeLength: this.#sync.completeLength,
      bytesPending: this.#sync.bytesPending,
      bytesFetched: this.#sync.bytesFetched,
      mirroredLength: this.#mirror?.appliedLength ?? null,
    }
  }

  async start(): Promise<void> {
    const { dataset, mirrorDirectory: directory, chunkStore } = this.#options
    if (directory !== null)
      this.#mirror = await Mirror.open({
        reader: dataset.reader,
        log: dataset.log,
        directory,
        chunkStore,
      })
    const signal = this.#abort.signal
    this.#running = Promise.all([
      this.#sync.run(signal),
      this.#keepSessions(signal),
      this.#applyCompleted(signal),
    ])
  }

  async stop(): Promise<void> {
    this.#abort.abort()
    this.#wakeApply?.()
    for (const session of this.#sessions.values()) session.close()
    await this.#running?.catch(() => undefined)
  }

  /** Opens a session with every peer that should have one, every second, until stopped. */
  async #keepSessions(signal: AbortSignal): Promise<void> {
    const { logReplication, sessionPeers } = this.#options
    while (!signal.aborted) {
      const wanted = new Set(sessionPeers())
      for (const [peer, session] of this.#sessions) {
        if (!wanted.has(peer)) {
          session.close()
          this.#sessions.delete(peer)
        }
      }
      for (const peer of wanted) {
        if (this.#sessions.has(peer)) continue
        const session = logReplication.replicate(peer, this.id)
        this.#sessions.set(peer, session)
        void session.closed.then(async () => {
          await sleep(SESSION_RETRY_MS, undefined, { signal }).catch(() => undefined)
          if (this.#sessions.get(peer) === session) this.#sessions.delete(peer)
        })
      }
      await sleep(SESSION_RETRY_MS, undefined, { signal }).catch(() => undefined)
    }
  }

  /** Called in log order by the chunk sync: records up to `length` are complete. */
  #completed(length: number): void {
    // The dataset takes the new length at once (its index may go that far now) and keeps
    // it for the next start.
    this.#options.dataset
      .markComplete(length)
      .catch((error: unknown) =>
        this.#options.log(
          `dataset ${this.id}: cannot keep the complete length ${length}: ${(error as Error).message}`,
        ),
      )
    this.#applyTarget = Math.max(this.#applyTarget, length)
    this.#wakeApply?.()
  }

  /**
   * Indexing and mirroring run beside the chunk sync, not in its way: the sync fetches the
   * next records while earlier ones are applied. Only the latest target is kept, so a slow
   * mirror takes the records that completed meanwhile in one go.
   */
  async #applyCompleted(signal: AbortSignal): Promise<void> {
    const { dataset, log } = this.#options
    let appliedTarget = 0
    while (!signal.aborted) {
      if (appliedTarget >= this.#applyTarget) {
        await new Promise<void>((resolve) => (this.#wakeApply = resolve))
        this.#wakeApply = null
        continue
      }
      const target = this.#applyTarget
      try {
        await dataset.refresh()
        if (this.#mirror !== null)
          await this.#mirror.applyTo(Math.min(target, dataset.index.indexedLength))
        appliedTarget = target
      } catch (error) {
        if (signal.aborted || isClusterError(error, 'CLOSED')) return
        log(`dataset ${this.id}: cannot apply records up to ${target}: ${(error as Error).message}`)
        await sleep(APPLY_RETRY_MS, undefined, { signal }).catch(() => undefined)
      }
    }
  }
}
