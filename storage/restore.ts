// Restoring a file or a tree at a point into a destination directory. Every file is
// written to a temporary file in its final directory, synced, then renamed into place,
// so no reader ever sees half a file; modes and mtimes come back. Nothing is written
// outside the destination: paths are checked, existing links in the destination are
// followed only when they lead inside it, and a restored symlink must resolve inside it
// too (checked again once every entry is in place, since links may point through links).
import { randomBytes } from 'node:crypto'
import type { Stats } from 'node:fs'
import {
  lstat,
  mkdir,
  open,
  readdir,
  type FileHandle,
  realpath,
  rename,
  rm,
  symlink,
  unlink,
  utimes,
  chmod,
} from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError, type ClusterErrorCode } from '../consensus/cluster-error.ts'
import type { DatasetReader, Point } from './dataset-reader.ts'
import type { DirectoryEntry, LiveEntry, SymlinkEntry } from './version-index.ts'
import { checkDatasetPath, parentPath, type DatasetPath } from './version-record.ts'
import { WriteBehind } from './write-behind.ts'

/** Temporary files are named this prefix and 16 hex digits; leftovers of a crash are removed by that name. */
export const TEMP_FILE_PREFIX = '.clusterreplica-tmp-'
const TEMP_FILE_PATTERN = /^\.clusterreplica-tmp-[0-9a-f]{16}$/
/** Path components followed while resolving a symlink target (loops end here). */
export const LINK_RESOLVE_STEPS_MAX = 256
/** Files written at once: their syncs overlap, and the file system commits them together. */
export const RESTORE_FILES_IN_FLIGHT_MAX = 16
/** A file's pieces are gathered into writes of about this size: a system call per chunk cost more. */
export const WRITE_BYTES_MAX = 1024 * 1024
/** Pieces in one write: the kernel's limit on one writev (IOV_MAX on Linux). */
export const WRITE_PIECES_MAX = 1024

/** Entries a restore reports as skipped rather than failing the whole restore. */
const SKIPPABLE: readonly ClusterErrorCode[] = [
  'UNSAFE_PATH',
  'REFUSED',
  'PRUNED',
  'NOT_FOUND',
  'HASH_MISMATCH',
  'CORRUPT_STORE',
]

export interface RestoreSkip {
  readonly path: DatasetPath
  readonly code: ClusterErrorCode
  readonly message: string
}

export interface RestoreResult {
  readonly length: number
  readonly files: number
  readonly directories: number
  readonly symlinks: number
  readonly bytes: number
  readonly skipped: readonly RestoreSkip[]
}

/**
 * Restores `path` ('' or absent: the whole dataset) as it was at `point` into
 * `destination`, at the same dataset-relative place. A single entry that cannot be
 * restored is an error; in a tree, such entries are skipped and reported.
 */
export async function restore(
  reader: DatasetReader,
  options: { readonly point: Point; readonly path?: string; readonly destination: string },
): Promise<RestoreResult> {
  return fileSystemCall(`cannot restore into ${options.destination}`, () =>
    restoreEntries(reader, options),
  )
}

async function restoreEntries(
  reader: DatasetReader,
  options: { readonly point: Point; readonly path?: string; readonly destination: string },
): Promise<RestoreResult> {
  const requested = options.path ?? ''
  const problem = requested === '' ? null : checkDatasetPath(requested)
  if (problem !== null)
    throw ClusterError.unsafePath(`cannot restore ${JSON.stringify(requested)}: ${problem}`)
  const root = await openDestination(options.destination)
  const length = await reader.resolve(options.point)
  const skipped: RestoreSkip[] = []
  const directories: DirectoryEntry[] = []
  /** Each restored link with the real directory it was made in. */
  const links: { entry: SymlinkEntry; directory: string }[] = []
  let files = 0
  let bytes = 0
  let entries = 0
  const skip = (entry: LiveEntry, error: unknown): void => {
    if (!isClusterError(error) || !SKIPPABLE.includes(error.code)) throw error
    skipped.push({ path: entry.path, code: error.code, message: error.message })
  }
  const writes = new BoundedTasks(RESTORE_FILES_IN_FLIGHT_MAX)
  try {
    for await (const entry of reader.index.entries(length, requested)) {
      entries++
      try {
        if (entry.kind === 'directory') {
          await ensureDirectory(root, entry.path, 'followInside')
          directories.push(entry)
        } else if (entry.kind === 'symlink') {
          links.push({ entry, directory: await restoreSymlink(root, entry) })
        } else {
          // Directories are made here, one at a time; only the files' bytes go in parallel.
          const directory = await ensureDirectory(
            root,
            parentPath(entry.path) ?? '',
            'followInside',
          )
          await refuseDirectoryInTheWay(directory, entry)
          await writes.add(async () => {
            try {
              const content = await reader.content(entry)
              const written = await writeFileAtomically(
                directory,
                baseName(entry.path),
                content,
                entry.mode,
                entry.mtimeMs,
              )
              bytes += written
              files++
            } catch (error) {
              skip(entry, error)
            }
          })
        }
      } catch (error) {
        skip(entry, error)
      }
    }
    await writes.drain()
  } finally {
    await writes.settle()
  }
  if (entries === 0)
    throw ClusterError.notFound(`nothing at ${JSON.stringify(requested)} at log length ${length}`)
  let symlinks = 0
  for (const { entry, directory } of links) {
    if (await resolvesInside(root, directory, entry.target)) {
      symlinks++
      continue
    }
    await unlink(join(directory, baseName(entry.path)))
    skipped.push({ path: entry.path, code: 'UNSAFE_PATH', message: unsafeLinkMessage(entry) })
  }
  // Directory modes and mtimes last, deepest first: writing entries moves a directory's mtime.
  for (const directory of [...directories].sort((a, b) => (a.path < b.path ? 1 : -1)))
    await setMetadata(join(root, directory.path), directory.mode, directory.mtimeMs)
  if (entries === 1 && skipped.length === 1) {
    const only = skipped[0]!
    throw new ClusterError(only.code, only.message)
  }
  return {
    length,
    files,
    directories: directories.length,
    symlinks,
    bytes,
    skipped,
  }
}

async function openDestination(destination: string): Promise<string> {
  try {
    await mkdir(destination, { recursive: true })
    return await realpath(destination)
  } catch (error) {
    throw ClusterError.io(
      `cannot use ${destination} as a restore destination: ${errorCode(error)}`,
      error,
    )
  }
}

/** Restores a link (if it points inside by name) and returns the real directory it is in. */
async function restoreSymlink(root: string, entry: SymlinkEntry): Promise<string> {
  const directory = await ensureDirectory(root, parentPath(entry.path) ?? '', 'followInside')
  // Checked by name first; the final check, once every entry exists, follows links.
  if (!isInside(root, resolve(directory, entry.target)))
    throw ClusterError.unsafePath(unsafeLinkMessage(entry))
  await refuseDirectoryInTheWay(directory, entry)
  await replaceWithSymlink(directory, baseName(entry.path), entry.target)
  return directory
}

function unsafeLinkMessage(entry: SymlinkEntry): string {
  return `symlink ${entry.path} points outside the destination (${JSON.stringify(entry.target)}); not restored`
}

async function refuseDirectoryInTheWay(directory: string, entry: LiveEntry): Promise<void> {
  const existing = await lstatOrNull(join(directory, baseName(entry.path)))
  if (existing?.isDirectory() === true) throw directoryInTheWay(entry)
}

function directoryInTheWay(entry: LiveEntry): ClusterError {
  return ClusterError.refused(`${entry.path}: a directory is in the way in the destination`)
}

/**
 * Makes `relativePath` (under `root`, which is a real path) an existing directory and returns
 * its real path. Missing components are created. An existing symlink is followed when it
 * leads inside `root` ('followInside'; else UNSAFE_PATH) or replaced by a directory
 * ('replace', for mirrors, which own their tree); another non-directory is REFUSED or replaced.
 */
export async function ensureDirectory(
  root: string,
  relativePath: string,
  policy: 'followInside' | 'replace',
): Promise<string> {
  let current = root
  if (relativePath === '') return current
  for (const component of relativePath.split('/')) {
    const next = join(current, component)
    const existing = await lstatOrNull(next)
    if (existing?.isDirectory() === true) {
      current = next
      continue
    }
    if (existing !== null && policy === 'followInside') {
      if (!existing.isSymbolicLink())
        throw ClusterError.refused(
          `${relative(root, next)} is in the way of a directory in the destination`,
        )
      current = await followLinkInside(root, next)
      continue
    }
    if (existing !== null) await rm(next, { recursive: true, force: true })
    await fileCall(next, () => mkdir(next))
    current = next
  }
  return current
}

async function followLinkInside(root: string, link: string): Promise<string> {
  let target: string
  try {
    target = await realpath(link)
  } catch {
    throw ClusterError.unsafePath(`${relative(root, link)} is a link that leads nowhere`)
  }
  if (!isInside(root, target))
    throw ClusterError.unsafePath(
      `${relative(root, link)} is a link that leads outside the destination`,
    )
  if ((await lstatOrNull(target))?.isDirectory() !== true)
    throw ClusterError.refused(`${relative(root, link)} leads to something that is not a directory`)
  return target
}

/**
 * Whether `target`, read as the kernel would from `directory` (real), ends inside `root`:
 * existing links on the way are followed; what does not exist yet is taken by name.
 */
export async function resolvesInside(
  root: string,
  directory: string,
  target: string,
): Promise<boolean> {
  let current = target.startsWith('/') ? '/' : directory
  const parts = target.split('/').filter((part) => part !== '' && part !== '.')
  if (parts.length > LINK_RESOLVE_STEPS_MAX) return false
  for (let index = 0; index < parts.length; index++) {
    const part = parts[index]!
    if (part === '..') {
      current = dirname(current)
      continue
    }
    const next = join(current, part)
    const existing = await lstatOrNull(next)
    if (existing === null) return isInside(root, resolve(next, ...parts.slice(index + 1)))
    if (existing.isSymbolicLink()) {
      try {
        current = await realpath(next)
      } catch {
        return false // a loop or a dangling link on the way: refuse
      }
    } else current = next
  }
  return isInside(root, current)
}

export function isInside(root: string, path: string): boolean {
  const rest = relative(root, path)
  return rest === '' || (rest !== '..' && !rest.startsWith(`..${sep}`) && !rest.startsWith(sep))
}

/**
 * Writes `content` to a temporary file in `directory`, sets its mode and mtime, syncs it
 * and renames it to `name`. Returns the bytes written; nothing is left behind on failure.
 * Pieces are gathered into writes of about WRITE_BYTES_MAX and kept until written, so
 * they must not change meanwhile.
 */
export async function writeFileAtomically(
  directory: string,
  name: string,
  content: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  mode: number,
  mtimeMs: number,
): Promise<number> {
  const temporary = join(directory, temporaryName())
  const handle = await fileCall(temporary, () => open(temporary, 'wx', 0o600))
  const writeBehind = new WriteBehind(() => fileCall(temporary, () => handle.datasync()))
  let bytes = 0
  try {
    let pieces: Uint8Array[] = []
    let piecesBytes = 0
    const writePieces = async (): Promise<void> => {
      await writeAll(temporary, handle, pieces, piecesBytes)
      writeBehind.written(piecesBytes)
      bytes += piecesBytes
      pieces = []
      piecesBytes = 0
    }
    for await (const piece of content) {
      pieces.push(piece)
      piecesBytes += piece.byteLength
      if (piecesBytes >= WRITE_BYTES_MAX || pieces.length >= WRITE_PIECES_MAX) await writePieces()
    }
    if (piecesBytes > 0) await writePieces()
    await writeBehind.awaitBackground()
    await fileCall(temporary, async () => {
      await handle.chmod(mode)
      await handle.utimes(mtimeMs / 1000, mtimeMs / 1000)
      await handle.sync()
    })
    await handle.close()
    await fileCall(temporary, () => rename(temporary, join(directory, name)))
    return bytes
  } catch (error) {
    await writeBehind.awaitBackground().catch(() => undefined)
    await handle.close().catch(() => undefined)
    await rm(temporary, { force: true })
    throw error
  }
}

/** Writes every piece, in order, with as few calls as the kernel allows (no copy into one buffer). */
async function writeAll(
  path: string,
  handle: FileHandle,
  pieces: readonly Uint8Array[],
  piecesBytes: number,
): Promise<void> {
  let rest = pieces
  let restBytes = piecesBytes
  while (restBytes > 0) {
    const { bytesWritten } = await fileCall(path, () => handle.writev(rest as Uint8Array[]))
    assert(bytesWritten > 0, 'a write makes progress')
    restBytes -= bytesWritten
    rest = piecesAfter(rest, bytesWritten)
  }
}

/** What is left of `pieces` once their first `bytes` are written. */
function piecesAfter(pieces: readonly Uint8Array[], bytes: number): Uint8Array[] {
  let skipped = bytes
  let index = 0
  while (index < pieces.length && skipped >= pieces[index]!.byteLength)
    skipped -= pieces[index++]!.byteLength
  if (index === pieces.length) return []
  return [pieces[index]!.subarray(skipped), ...pieces.slice(index + 1)]
}

/** A symlink named `name` in `directory`, replacing whatever non-directory is there, atomically. */
export async function replaceWithSymlink(
  directory: string,
  name: string,
  target: string,
): Promise<void> {
  const temporary = join(directory, temporaryName())
  await fileCall(temporary, () => symlink(target, temporary))
  try {
    await fileCall(temporary, () => rename(temporary, join(directory, name)))
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
}

export async function setMetadata(path: string, mode: number, mtimeMs: number): Promise<void> {
  await fileCall(path, async () => {
    await chmod(path, mode)
    await utimes(path, mtimeMs / 1000, mtimeMs / 1000)
  })
}

/** Removes the temporary files a crash left in `directory`; returns how many. */
export async function removeTemporaryFiles(directory: string): Promise<number> {
  let names: string[]
  try {
    names = await readdir(directory)
  } catch {
    return 0 // gone or not a directory: nothing of ours to clean
  }
  const leftovers = names.filter((name) => TEMP_FILE_PATTERN.test(name))
  for (const name of leftovers) await rm(join(directory, name), { force: true, recursive: true })
  return leftovers.length
}

/** Runs up to `limit` tasks at once; the first failure is kept, and thrown by add() or drain(). */
class BoundedTasks {
  private readonly limit: number
  private readonly running = new Set<Promise<void>>()
  private failure: { readonly error: unknown } | null = null

  constructor(limit: number) {
    this.limit = limit
  }

  /** Starts `task`, then waits while `limit` tasks run. */
  async add(task: () => Promise<void>): Promise<void> {
    this.throwFailure()
    const run: Promise<void> = task()
      .catch((error: unknown) => void (this.failure ??= { error }))
      .finally(() => this.running.delete(run))
    this.running.add(run)
    while (this.running.size >= this.limit) await Promise.race(this.running)
    this.throwFailure()
  }

  /** Waits for every task; throws the first failure. */
  async drain(): Promise<void> {
    await this.settle()
    this.throwFailure()
  }

  /** Waits for every task, whatever happens to them. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running)
  }

  private throwFailure(): void {
    if (this.failure !== null) throw this.failure.error
  }
}

export function isTemporaryName(name: string): boolean {
  return TEMP_FILE_PATTERN.test(name)
}

export function temporaryName(): string {
  return `${TEMP_FILE_PREFIX}${randomBytes(8).toString('hex')}`
}

export function baseName(path: DatasetPath): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return null
    throw ClusterError.io(`cannot examine ${path}: ${errorCode(error)}`, error)
  }
}

/** File system errors while writing become IO_ERROR (a full disk, a read-only file system). */
function fileCall<T>(path: string, call: () => Promise<T>): Promise<T> {
  return fileSystemCall(`cannot write ${path}`, call)
}

/**
 * Runs `call`, turning a failed system call (an error with an errno code) into IO_ERROR
 * saying `what` failed. Other errors, assertion failures among them, pass unchanged.
 */
export async function fileSystemCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (isClusterError(error) || typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) throw error
    throw ClusterError.io(`${what}: ${code}`, error)
  }
}

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message
}
