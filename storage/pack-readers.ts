// Positioned reads from pack files through a small cache of open read handles: one open
// per pack rather than per chunk, and few enough descriptors for a store of thousands
// of packs. A handle in use is never closed; idle ones beyond the bound are, oldest first.
import { open, type FileHandle } from 'node:fs/promises'
import { assert } from '../consensus/assert.ts'
import { ClusterError, isClusterError } from '../consensus/cluster-error.ts'
import { packCall } from './pack-file.ts'
import {
  RECORD_BYTES_MAX,
  packFileName,
  packPath,
  recordBytes,
  recordEnd,
  type RecordLocation,
} from './pack-format.ts'

/** Open handles kept for packs that no read is using right now. */
export const IDLE_READ_HANDLES_MAX = 32
/**
 * Records that lie one after another in a pack are read with one read of up to this many
 * bytes: a read per chunk made the system calls and thread-pool hand-offs most of a
 * restore's time.
 */
export const RUN_READ_BYTES_MAX = 4 * 1024 * 1024
assert(RUN_READ_BYTES_MAX >= RECORD_BYTES_MAX, 'a run holds the largest record')

interface Reader {
  readonly opened: Promise<FileHandle>
  users: number
}

export class PackReaders {
  private readonly packsDirectory: string
  /** In least recently used order: a Map iterates in insertion order. */
  private readonly readers = new Map<number, Reader>()

  constructor(packsDirectory: string) {
    this.packsDirectory = packsDirectory
  }

  /** Reads up to `length` bytes at `offset`: fewer only where the pack ends. */
  async read(packId: number, offset: number, length: number): Promise<Buffer> {
    const reader = this.acquire(packId)
    try {
      const handle = await reader.opened
      const buffer = Buffer.allocUnsafe(length)
      const path = packPath(this.packsDirectory, packId)
      const { bytesRead } = await packCall(path, 'read', () =>
        handle.read(buffer, 0, length, offset),
      )
      return buffer.subarray(0, bytesRead)
    } finally {
      this.release(packId, reader)
    }
  }

  /**
   * Reads the records at `locations` (each as far as its pack holds it), reading records
   * that follow one another in a pack together. A missing pack is CORRUPT_STORE for its
   * records only; any other failure fails the whole call.
   */
  async readRecords(locations: readonly RecordLocation[]): Promise<(Buffer | ClusterError)[]> {
    const records: (Buffer | ClusterError)[] = []
    const reads: Promise<void>[] = []
    for (let first = 0; first < locations.length;) {
      const start = locations[first]!
      let end = first + 1
      while (end < locations.length && followsInRun(start, locations[end - 1]!, locations[end]!))
        end++
      const length = recordEnd(locations[end - 1]!) - start.offset
      const runFirst = first
      reads.push(
        this.read(start.packId, start.offset, length).then(
          (run) => {
            for (let index = runFirst; index < end; index++) {
              const from = locations[index]!.offset - start.offset
              records[index] = run.subarray(from, from + recordBytes(locations[index]!))
            }
          },
          (error: unknown) => {
            if (!isClusterError(error, 'CORRUPT_STORE')) throw error
            for (let index = runFirst; index < end; index++) records[index] = error
          },
        ),
      )
      first = end
    }
    await Promise.all(reads)
    return records
  }

  /** Closes the handles of packs about to be deleted; none may be in use. */
  async forget(packIds: Iterable<number>): Promise<void> {
    for (const packId of packIds) {
      const reader = this.readers.get(packId)
      if (reader === undefined) continue
      assert(reader.users === 0, 'a pack is forgotten only when no read uses it')
      this.readers.delete(packId)
      await closeQuietly(reader)
    }
  }

  async closeAll(): Promise<void> {
    await this.forget([...this.readers.keys()])
  }

  private acquire(packId: number): Reader {
    let reader = this.readers.get(packId)
    if (reader === undefined) {
      reader = { opened: this.openPack(packId), users: 0 }
      // A failed open is not cached: the next read tries again.
      reader.opened.catch(() => {
        if (this.readers.get(packId) === reader) this.readers.delete(packId)
      })
    }
    this.readers.delete(packId)
    this.readers.set(packId, reader)
    reader.users++
    return reader
  }

  private release(packId: number, reader: Reader): void {
    reader.users--
    assert(reader.users >= 0, 'every release follows an acquire')
    let idle = 0
    for (const each of this.readers.values()) if (each.users === 0) idle++
    for (const [id, each] of this.readers) {
      if (idle <= IDLE_READ_HANDLES_MAX) break
      if (each.users > 0 || id === packId) continue
      this.readers.delete(id)
      idle--
      void closeQuietly(each)
    }
  }

  private async openPack(packId: number): Promise<FileHandle> {
    const path = packPath(this.packsDirectory, packId)
    try {
      return await open(path, 'r')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw ClusterError.corruptStore(`pack ${packFileName(packId)} is missing from ${path}`)
      }
      throw ClusterError.io(`chunk store: cannot open ${path}: ${String(error)}`, error)
    }
  }
}

/** `next` lies right after `previous` in the pack of the run that begins at `start`, and fits in it. */
function followsInRun(
  start: RecordLocation,
  previous: RecordLocation,
  next: RecordLocation,
): boolean {
  return (
    next.packId === start.packId &&
    next.offset === recordEnd(previous) &&
    recordEnd(next) - start.offset <= RUN_READ_BYTES_MAX
  )
}

async function closeQuietly(reader: Reader): Promise<void> {
  // A handle that failed to open has nothing to close; a close error loses nothing.
  await reader.opened.then((handle) => handle.close()).catch(() => undefined)
}
