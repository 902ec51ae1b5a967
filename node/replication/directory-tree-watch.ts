// Watching a directory tree on Linux with one inotify watch per directory (a plain fs.watch
// each), not Node's recursive fs.watch: on Linux, Node 20 emulates recursion in JavaScript,
// with a watch per file as well and a synchronous listing of the whole directory on every
// event in it. Measured by bench/watch-burst.ts, a burst of 1,000 new files in one directory
// cost that emulation 1.9 s of CPU and its last event came 2 s after the burst; one watch
// per directory cost 24 ms and kept up with the burst.
//
// A directory that appears (created, or moved in) is watched first and listed second, and
// everything found inside is reported as changed: what was written before its watch began
// is not lost. A directory that goes (removed, or moved out) has its watches closed, with
// everything below it. The watches of a directory moved within the tree follow its inode,
// so a move is handled as the directory going from its old place and appearing at its new
// one: no event is ever reported under a name the directory no longer has. A directory is
// known by its inode and its birth time together: ext4 hands a removed directory's inode
// number to the next one made, and a watch kept for the old one would see nothing.
import { watch, type Dirent, type FSWatcher } from 'node:fs'
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { assert } from '../../consensus/assert.ts'
import { forEachBounded } from '../../storage/for-each-bounded.ts'

/** Directory listings in flight at once while a tree (or a new part of it) is walked. */
export const LISTINGS_IN_FLIGHT_MAX = 16

/** Errors that mean the path is not (or no longer) a directory to watch: it went meanwhile. */
const GONE: readonly string[] = ['ENOENT', 'ENOTDIR']

export interface DirectoryTreeWatchOptions {
  /**
   * A path relative to the root ('/'-separated) had an event, or was found inside a
   * directory that has just begun to be watched.
   */
  readonly onPath: (path: string) => void
  /** A watch could not be set or failed; the error's code says why (ENOSPC: out of watches). */
  readonly onError: (error: NodeJS.ErrnoException) => void
}

interface DirectoryWatch {
  readonly watcher: FSWatcher
  readonly identity: string
}

/** Inode and birth time (0 where the file system keeps none): one directory's, never another's. */
async function identityOf(absolute: string): Promise<{ identity: string; isDirectory: boolean }> {
  const found = await lstat(absolute, { bigint: true })
  return { identity: `${found.ino}:${found.birthtimeNs}`, isDirectory: found.isDirectory() }
}

export class DirectoryTreeWatch {
  readonly #root: string
  readonly #options: DirectoryTreeWatchOptions
  /** Watched directories by path relative to the root ('' is the root). */
  readonly #watches = new Map<string, DirectoryWatch>()
  /** Per path, the look at it now running and whether another must follow it. */
  readonly #reconciling = new Map<string, { again: boolean }>()
  #closed = false

  constructor(root: string, options: DirectoryTreeWatchOptions) {
    this.#root = root
    this.#options = options
  }

  /** Directories watched now. */
  get directoryCount(): number {
    return this.#watches.size
  }

  /**
   * Watches the root and every directory below it; resolves once all are watched. Nothing
   * found on the way is reported: what is already there is the first scan's to record.
   * Throws when the root itself cannot be watched.
   */
  async start(): Promise<void> {
    assert(this.#watches.size === 0 && !this.#closed, 'a tree watch starts once')
    // The root's own watch failing is thrown (it is gone, or no watch is left): below it,
    // a directory that goes meanwhile is simply not watched.
    this.#watch('', this.#root, (await identityOf(this.#root)).identity)
    await this.#watchTree('', false)
  }

  /** Closes every watch; nothing is reported afterwards. */
  close(): void {
    this.#closed = true
    for (const { watcher } of this.#watches.values()) watcher.close()
    this.#watches.clear()
  }

  /**
   * Watches `top` and every directory below it, a level at a time with a bounded number of
   * listings at once; with `report`, every path found is reported.
   */
  async #watchTree(top: string, report: boolean): Promise<void> {
    let level = [top]
    while (level.length > 0 && !this.#closed) {
      const below: string[] = []
      await forEachBounded(level, LISTINGS_IN_FLIGHT_MAX, async (directory) => {
        for (const entry of await this.#watchAndList(directory)) {
          const path = directory === '' ? entry.name : `${directory}/${entry.name}`
          if (report) this.#options.onPath(path)
          if (entry.isDirectory()) below.push(path)
        }
      })
      level = below
    }
  }

  /** Watches one directory, then lists it (in this order, so nothing falls between). */
  async #watchAndList(path: string): Promise<Dirent[]> {
    if (this.#closed) return []
    const absolute = join(this.#root, path)
    try {
      const { identity } = await identityOf(absolute)
      if (this.#closed) return []
      this.#watch(path, absolute, identity)
      return await readdir(absolute, { withFileTypes: true })
    } catch (caught) {
      const error = caught as NodeJS.ErrnoException
      if (this.#closed) return []
      // Gone meanwhile: the event of its removal tidies up what was set.
      if (error.code !== undefined && GONE.includes(error.code)) return []
      this.#options.onError(error)
      return []
    }
  }

  #watch(path: string, absolute: string, identity: string): void {
    const previous = this.#watches.get(path)
    if (previous !== undefined) {
      // The root replaced by another directory is the change watcher's to notice (it
      // watches the parent) and to start watching again: never unwatched from in here.
      if (previous.identity === identity || path === '') return
      this.#unwatchTree(path)
    }
    const watcher = watch(absolute, (type, name) => this.#onEvent(path, type, name))
    watcher.on('error', (error: NodeJS.ErrnoException) => {
      if (this.#closed || this.#watches.get(path)?.watcher !== watcher) return
      if (error.code !== undefined && GONE.includes(error.code)) return
      this.#options.onError(error)
    })
    this.#watches.set(path, { watcher, identity })
  }

  #onEvent(directory: string, type: string, name: string | null): void {
    if (this.#closed || name === null) return
    const path = directory === '' ? name : `${directory}/${name}`
    this.#options.onPath(path)
    // 'rename' is every change of a name (created, removed, moved): it may be a directory
    // that appeared or went. 'change' is content or attributes: never a new name.
    if (type === 'rename') void this.#reconcile(path)
  }

  /** Brings the watches at and below `path` in line with what is there now. */
  async #reconcile(path: string): Promise<void> {
    const running = this.#reconciling.get(path)
    if (running !== undefined) {
      running.again = true
      return
    }
    const state = { again: true }
    this.#reconciling.set(path, state)
    try {
      while (state.again && !this.#closed) {
        state.again = false
        await this.#reconcileOnce(path)
      }
    } finally {
      this.#reconciling.delete(path)
    }
  }

  async #reconcileOnce(path: string): Promise<void> {
    let identity: string | null = null
    try {
      const found = await identityOf(join(this.#root, path))
      if (found.isDirectory) identity = found.identity
    } catch (caught) {
      const error = caught as NodeJS.ErrnoException
      if (error.code === undefined || !GONE.includes(error.code)) this.#options.onError(error)
    }
    if (this.#closed) return
    const watched = this.#watches.get(path)
    if (identity !== null && watched?.identity === identity) return
    this.#unwatchTree(path)
    if (identity !== null) await this.#watchTree(path, true)
  }

  /** Closes the watches of `path` and of every directory below it. */
  #unwatchTree(path: string): void {
    assert(path !== '', 'the root is unwatched only by close()')
    const below = `${path}/`
    for (const [watchedPath, { watcher }] of this.#watches) {
      if (watchedPath !== path && !watchedPath.startsWith(below)) continue
      watcher.close()
      this.#watches.delete(watchedPath)
    }
  }
}
