// How a master learns of changes in real time. A watch on every directory of the tree
// (directory-tree-watch.ts) reports paths; each path waits until it has had no event for
// debounceMs and its inode has not changed for stableMs, then it is reported, many paths in
// one batch. A periodic rescan is the safety net that watching always needs (events can be
// lost, and watching can fail), and the watcher falls back on rescans alone whenever it
// cannot watch: when the system is out of inotify watches (ENOSPC), when the directory is
// removed or replaced (it watches again once the directory is back), or when more paths are
// pending than it will track. One more watch, on the parent directory, tells us when the
// directory itself is removed, renamed or re-created.
import { watch, type FSWatcher } from 'node:fs'
import { lstat, stat } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join } from 'node:path'
import { assert } from '../../consensus/assert.ts'
import { ClusterError } from '../../consensus/cluster-error.ts'
import { DirectoryTreeWatch } from './directory-tree-watch.ts'

/**
 * Latency against wasted work: a path is reported debounceMs after its last event at the
 * earliest, and a file only once its inode has been still for stableMs. Shorter delays
 * replicate sooner (the goal is p95 under 100 ms from a file's close to a replica's mirror,
 * and these delays come first in that budget); longer ones record fewer half-written
 * versions of a file written in bursts. A file that never settles (a log being appended
 * to) is reported after stableWaitMsMax anyway, so that it still replicates.
 */
export const CHANGE_WATCHER_DEFAULTS = {
  debounceMs: 20,
  stableMs: 30,
  stableWaitMsMax: 5_000,
  rescanMs: 60_000,
  /** The first retry of a failed watch; each next one waits twice as long, up to rescanMs. */
  watchRetryMsMin: 500,
  /** Paths tracked at once; past this the watcher asks for one rescan instead. */
  pendingPathsMax: 10_000,
} as const

/** File system look-ups in flight at once; the rest wait their turn. */
export const STATS_IN_FLIGHT_MAX = 32

/** The longest wait between two looks for a missing directory. */
export const MISSING_RETRY_MS_MAX = 5_000

/** Errors that mean no more watches can be set: the watcher falls back on rescans. */
const WATCHES_EXHAUSTED: readonly string[] = ['ENOSPC', 'EMFILE', 'ENFILE', 'ENOMEM']

const isWatchesExhausted = (error: NodeJS.ErrnoException): boolean =>
  error.code !== undefined && WATCHES_EXHAUSTED.includes(error.code)

export interface ChangeWatcherOptions {
  readonly debounceMs?: number
  readonly stableMs?: number
  readonly stableWaitMsMax?: number
  readonly rescanMs?: number
  readonly watchRetryMsMin?: number
  readonly pendingPathsMax?: number
  /**
   * Paths relative to the directory ('/'-separated) that changed and are now stable, or
   * gone: a path that is gone may have been a directory, with everything under it.
   */
  readonly onChanges: (paths: Set<string>) => void
  /** Compare the whole tree with what was recorded: changes may have been missed. */
  readonly onRescan: () => void
  /** Watching failed or the directory vanished; the watcher carries on as it can. */
  readonly onWarning?: (warning: ClusterError) => void
}

export type ChangeWatcherStatus = 'starting' | 'watching' | 'degraded' | 'missing' | 'closed'

type Settings = Required<Omit<ChangeWatcherOptions, 'onChanges' | 'onRescan' | 'onWarning'>>

/** A directory's: the birth time too, as a removed directory's inode number is soon reused. */
interface Identity {
  readonly device: number
  readonly inode: number
  readonly birthtimeMs: number
}

/** What a look-up found: a regular file's inode state, or anything else (reported at once). */
type Signature =
  | {
      readonly kind: 'file'
      readonly size: number
      readonly ctimeMs: number
      readonly inode: number
    }
  | { readonly kind: 'gone' | 'other' }

interface PendingPath {
  readonly firstEventMs: number
  lastEventMs: number
  previous: Signature | null
  previousAtMs: number
  timer: NodeJS.Timeout | null
}

export class ChangeWatcher {
  readonly #directory: string
  readonly #settings: Settings
  readonly #onChanges: (paths: Set<string>) => void
  readonly #onRescan: () => void
  readonly #onWarning: (warning: ClusterError) => void
  #status: ChangeWatcherStatus = 'starting'
  #tree: DirectoryTreeWatch | null = null
  #sentinel: FSWatcher | null = null
  #identity: Identity | null = null
  #checkingRoot = false
  readonly #pending = new Map<string, PendingPath>()
  /** Paths whose look-up is due, oldest first (a Set keeps insertion order). */
  readonly #due = new Set<string>()
  #inFlight = 0
  #idle: (() => void) | null = null
  #ready = new Set<string>()
  #flush: NodeJS.Immediate | null = null
  #rescanTimer: NodeJS.Timeout | null = null
  #retryTimer: NodeJS.Timeout | null = null
  #retryMs: number
  /** What the last warning was about, so that retries do not repeat it. */
  #warned: 'missing' | 'degraded' | null = null
  /** Too many paths at once: they are dropped, and one rescan follows once events calm down. */
  #floodTimer: NodeJS.Timeout | null = null
  #floodLastEventMs = 0

  constructor(directory: string, options: ChangeWatcherOptions) {
    assert(
      isAbsolute(directory) && dirname(directory) !== directory,
      'watch an absolute directory other than /',
    )
    const settings = { ...CHANGE_WATCHER_DEFAULTS, ...withoutCallbacks(options) }
    for (const [name, value] of Object.entries(settings))
      assert(Number.isSafeInteger(value) && value > 0, `${name} must be a positive integer`)
    assert(
      settings.stableWaitMsMax >= settings.stableMs,
      'stableWaitMsMax must be at least stableMs',
    )
    this.#directory = directory
    this.#settings = settings
    this.#retryMs = settings.watchRetryMsMin
    this.#onChanges = options.onChanges
    this.#onRescan = options.onRescan
    this.#onWarning = options.onWarning ?? ((warning) => process.emitWarning(warning))
  }

  get status(): ChangeWatcherStatus {
    return this.#status
  }

  /**
   * Starts watching (or waiting for the directory, or rescanning only, with a warning). What
   * is already there is not reported: start the watcher first, then scan, so nothing
   * written in between is missed.
   */
  async start(): Promise<void> {
    assert(this.#status === 'starting', 'a watcher starts once')
    this.#scheduleRescan()
    await this.#establish()
  }

  /** Stops every watch and timer; nothing is reported once this has resolved. */
  async close(): Promise<void> {
    if (this.#status === 'closed') return
    this.#status = 'closed'
    this.#unwatch()
    for (const entry of this.#pending.values()) clearTimeout(entry.timer ?? undefined)
    this.#pending.clear()
    this.#due.clear()
    this.#ready.clear()
    clearImmediate(this.#flush ?? undefined)
    for (const timer of [this.#rescanTimer, this.#retryTimer, this.#floodTimer])
      clearTimeout(timer ?? undefined)
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#idle = resolve))
  }

  async #establish(): Promise<void> {
    this.#retryTimer = null
    const found = await rootIdentity(this.#directory)
    if (this.#status !== 'closed') await this.#watchFound(found)
  }

  async #watchFound(found: Awaited<ReturnType<typeof rootIdentity>>): Promise<void> {
    if ('problem' in found) {
      if (this.#warned !== 'missing')
        this.#onWarning(
          ClusterError.notFound(
            `cannot watch ${this.#directory} (${found.problem}); no rescan until it is back`,
          ),
        )
      this.#status = 'missing'
      this.#warned = 'missing'
      return this.#scheduleRetry()
    }
    const caughtUp = this.#status !== 'starting'
    // Events that come while the tree is being watched are dropped: the first scan, or the
    // rescan below, comes after and finds what they would have reported.
    const tree = new DirectoryTreeWatch(this.#directory, {
      onPath: (path) => this.#onEvent(path),
      onError: (error) => this.#onWatchError(error),
    })
    this.#tree = tree
    try {
      await tree.start()
    } catch (caught) {
      if (this.#tree === tree) this.#cannotWatch(caught as NodeJS.ErrnoException)
      return
    }
    // Out of watches on the way, or closed meanwhile.
    if (this.#tree !== tree || this.#status === 'closed') return
    try {
      this.#sentinel = watchParent(this.#directory, () => void this.#checkRoot())
      this.#sentinel.on('error', (error) => this.#onWatchError(error))
    } catch (caught) {
      const error = caught as NodeJS.ErrnoException
      if (isWatchesExhausted(error)) return this.#cannotWatch(error)
      this.#onWarning(
        ClusterError.io(
          `cannot watch the parent of ${this.#directory} (${error.message}); its removal is noticed at the next rescan`,
          error,
        ),
      )
    }
    this.#identity = found.identity
    this.#status = 'watching'
    this.#warned = null
    this.#retryMs = this.#settings.watchRetryMsMin
    // Whatever changed while nothing watched is found by a rescan.
    if (caughtUp) this.#onRescan()
  }

  /** An error while watching: only running out of watches stops it. */
  #onWatchError(error: NodeJS.ErrnoException): void {
    if (this.#status === 'closed' || this.#tree === null) return
    if (isWatchesExhausted(error)) return this.#cannotWatch(error)
    // A directory removed while it was being listed: harmless unless it was the watched one.
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') {
      void this.#checkRoot()
      return
    }
    this.#onWarning(
      ClusterError.io(
        `watching part of ${this.#directory} failed (${error.message}); rescans still cover it`,
        error,
      ),
    )
  }

  #cannotWatch(error: NodeJS.ErrnoException): void {
    const wasWatching = this.#status === 'watching'
    this.#unwatch()
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') {
      this.#status = 'missing'
      return this.#scheduleRetry()
    }
    const reason =
      error.code === 'ENOSPC'
        ? "the system's inotify watches are used up (raise fs.inotify.max_user_watches)"
        : error.message
    if (this.#warned !== 'degraded')
      this.#onWarning(
        ClusterError.io(
          `watching ${this.#directory} failed: ${reason}; rescanning every ${this.#settings.rescanMs} ms until watching works again`,
          error,
        ),
      )
    this.#status = 'degraded'
    this.#warned = 'degraded'
    if (wasWatching) this.#onRescan()
    this.#scheduleRetry()
  }

  /**
   * Retries back off up to rescanMs while watching fails (each attempt walks the whole tree),
   * and only up to MISSING_RETRY_MS_MAX while the directory is missing (a stat is cheap).
   */
  #scheduleRetry(): void {
    const delayMs = this.#retryMs
    const capMs =
      this.#status === 'missing'
        ? Math.min(MISSING_RETRY_MS_MAX, this.#settings.rescanMs)
        : this.#settings.rescanMs
    this.#retryMs = Math.min(this.#retryMs * 2, capMs)
    this.#retryTimer = setTimeout(() => void this.#establish(), delayMs)
  }

  #unwatch(): void {
    this.#tree?.close()
    this.#sentinel?.close()
    this.#tree = null
    this.#sentinel = null
  }

  /** Watching follows an inode: if the path now names another directory, or none, watch again. */
  async #checkRoot(): Promise<boolean> {
    if (this.#status !== 'watching' || this.#checkingRoot) return false
    this.#checkingRoot = true
    try {
      const found = await rootIdentity(this.#directory)
      if (this.#status !== 'watching') return false
      const previous = this.#identity
      if ('identity' in found && previous !== null && sameIdentity(found.identity, previous))
        return false
      this.#unwatch()
      await this.#watchFound(found)
      return true
    } finally {
      this.#checkingRoot = false
    }
  }

  #scheduleRescan(): void {
    this.#rescanTimer = setTimeout(() => void this.#rescanNow(), this.#settings.rescanMs)
  }

  async #rescanNow(): Promise<void> {
    // A directory that is not there is never rescanned: a lost mount must not read as every file deleted.
    const reestablished = await this.#checkRoot()
    if (this.#status === 'closed') return
    if (!reestablished && this.#status !== 'missing') this.#onRescan()
    this.#scheduleRescan()
  }

  #onEvent(path: string): void {
    if (this.#status !== 'watching') return
    const nowMs = performance.now()
    if (this.#floodTimer !== null) {
      this.#floodLastEventMs = nowMs
      return
    }
    const entry = this.#pending.get(path)
    if (entry !== undefined) {
      entry.lastEventMs = nowMs
      return
    }
    if (this.#pending.size + this.#ready.size >= this.#settings.pendingPathsMax)
      return this.#flood(nowMs)
    const created: PendingPath = {
      firstEventMs: nowMs,
      lastEventMs: nowMs,
      previous: null,
      previousAtMs: 0,
      timer: null,
    }
    this.#pending.set(path, created)
    this.#wake(path, created, this.#settings.debounceMs)
  }

  /** Drops every tracked path and asks for one rescan once events have calmed down. */
  #flood(nowMs: number): void {
    for (const entry of this.#pending.values()) clearTimeout(entry.timer ?? undefined)
    this.#pending.clear()
    this.#due.clear()
    this.#floodLastEventMs = nowMs
    if (this.#floodTimer === null) this.#waitForCalm()
  }

  #waitForCalm(): void {
    const calmMs = this.#settings.debounceMs + this.#settings.stableMs
    const quietMs = performance.now() - this.#floodLastEventMs
    this.#floodTimer = setTimeout(
      () => {
        if (performance.now() - this.#floodLastEventMs < calmMs) return this.#waitForCalm()
        this.#floodTimer = null
        this.#onRescan()
      },
      Math.max(1, Math.ceil(calmMs - quietMs)),
    )
  }

  #wake(path: string, entry: PendingPath, delayMs: number): void {
    entry.timer = setTimeout(
      () => {
        entry.timer = null
        this.#due.add(path)
        this.#pump()
      },
      Math.max(1, Math.ceil(delayMs)),
    )
  }

  #pump(): void {
    while (this.#inFlight < STATS_IN_FLIGHT_MAX && this.#due.size > 0) {
      const path = this.#due.values().next().value as string
      this.#due.delete(path)
      this.#inFlight++
      void this.#check(path).finally(() => {
        this.#inFlight--
        if (this.#status === 'closed') {
          if (this.#inFlight === 0) this.#idle?.()
          return
        }
        this.#pump()
      })
    }
  }

  /** Reports a path once it is quiet and stable, or looks again when it might be. */
  async #check(path: string): Promise<void> {
    const entry = this.#pending.get(path)
    if (entry === undefined) return
    const { debounceMs } = this.#settings
    const quietMs = performance.now() - entry.lastEventMs
    if (quietMs < debounceMs) return this.#wake(path, entry, debounceMs - quietMs)
    const eventMs = entry.lastEventMs
    const signature = await signatureOf(join(this.#directory, path))
    if (this.#pending.get(path) !== entry) return
    if (entry.lastEventMs !== eventMs) return this.#wake(path, entry, debounceMs)
    const nowMs = performance.now()
    const waitMs = this.#stableInMs(signature, entry, nowMs)
    if (waitMs <= 0 || nowMs - entry.firstEventMs >= this.#settings.stableWaitMsMax)
      return this.#report(path)
    entry.previous = signature
    entry.previousAtMs = nowMs
    this.#wake(path, entry, waitMs)
  }

  /**
   * How long until the file could count as stable; zero or less when it is. A change to the
   * inode (data, size, mode, times) sets its ctime, which no one can set back: a ctime
   * stableMs old means nothing touched the file since. A ctime in the future (the clock was
   * set back) falls back to seeing the same inode state twice, stableMs apart.
   */
  #stableInMs(signature: Signature, entry: PendingPath, nowMs: number): number {
    if (signature.kind !== 'file') return 0
    const { stableMs } = this.#settings
    const ageMs = Date.now() - signature.ctimeMs
    if (ageMs >= stableMs) return 0
    if (sameSignature(entry.previous, signature) && nowMs - entry.previousAtMs >= stableMs) return 0
    return ageMs >= 0 ? stableMs - ageMs : stableMs
  }

  #report(path: string): void {
    this.#pending.delete(path)
    this.#ready.add(path)
    // Paths that settle together are reported together.
    this.#flush ??= setImmediate(() => {
      this.#flush = null
      const paths = this.#ready
      this.#ready = new Set()
      if (this.#status !== 'closed' && paths.size > 0) this.#onChanges(paths)
    })
  }
}

/** One more watch, on the parent: it sees the directory removed, renamed or re-created. */
function watchParent(directory: string, onRootEvent: () => void): FSWatcher {
  const name = basename(directory)
  return watch(dirname(directory), (_type, filename) => {
    if (filename === null || filename.toString() === name) onRootEvent()
  })
}

function withoutCallbacks(options: ChangeWatcherOptions): Partial<Settings> {
  const { onChanges: _changes, onRescan: _rescan, onWarning: _warning, ...settings } = options
  return settings
}

async function rootIdentity(
  directory: string,
): Promise<{ identity: Identity } | { problem: string }> {
  try {
    const found = await stat(directory)
    if (!found.isDirectory()) return { problem: 'it is not a directory' }
    return { identity: { device: found.dev, inode: found.ino, birthtimeMs: found.birthtimeMs } }
  } catch (error) {
    return { problem: (error as NodeJS.ErrnoException).code ?? (error as Error).message }
  }
}

const sameIdentity = (a: Identity, b: Identity): boolean =>
  a.device === b.device && a.inode === b.inode && a.birthtimeMs === b.birthtimeMs

async function signatureOf(path: string): Promise<Signature> {
  try {
    const found = await lstat(path)
    if (!found.isFile()) return { kind: 'other' }
    return {
      kind: 'file',
      size: found.size,
      ctimeMs: found.ctimeMs,
      inode: found.ino,
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    // Anything but "not there" (a permission problem, say) is the scanner's to report.
    return { kind: code === 'ENOENT' || code === 'ENOTDIR' ? 'gone' : 'other' }
  }
}

function sameSignature(a: Signature | null, b: Signature): boolean {
  if (a === null || a.kind !== 'file' || b.kind !== 'file') return false
  return a.size === b.size && a.ctimeMs === b.ctimeMs && a.inode === b.inode
}
