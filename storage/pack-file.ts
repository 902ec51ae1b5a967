// Writing and scanning append-only pack files. The appender batches records in a write
// buffer so that a pack grows by one system call per buffer, not per chunk, and rolls
// over to a new pack at a size bound. Durability is explicit: nothing is promised about
// appended records until sync() has returned. The scanner walks a pack's records from
// an offset, verifying each, and says where the last whole, valid record ends.
import { open, type FileHandle } from 'node:fs/promises'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import {
  RECORD_BYTES_MAX,
  RECORD_HEADER_BYTES,
  packPath,
  readRecordHeader,
  recordBytes,
  sha256,
  writeRecordHeader,
  type RecordLocation,
} from './pack-format.ts'
import { WriteBehind } from './write-behind.ts'

/** Appended records are gathered here and written in one call when it fills. */
export const WRITE_BUFFER_BYTES = 4 * 1024 * 1024
/** How much of a pack a scan holds at once. */
export const SCAN_BUFFER_BYTES = 4 * 1024 * 1024
assert(WRITE_BUFFER_BYTES >= RECORD_BYTES_MAX, 'a record fits in the write buffer')
assert(SCAN_BUFFER_BYTES >= 2 * RECORD_BYTES_MAX, 'a record and the next read fit in a scan')

export interface PackSize {
  readonly packId: number
  readonly sizeBytes: number
}

interface OpenPack {
  readonly packId: number
  readonly handle: FileHandle
  /** Bytes in the file (not counting the write buffer). */
  writtenBytes: number
  /** Syncs in the background as the pack grows, and when it rolls over. */
  readonly writeBehind: WriteBehind
}

/** Not safe for concurrent calls: its owner serialises them. */
export class PackAppender {
  private readonly packsDirectory: string
  private readonly packSizeBytesMax: number
  private readonly allocatePackId: () => number
  private current: OpenPack | null = null
  /** Packs rolled over since the last sync: kept open until sync() has made them durable. */
  private readonly rolledOver: OpenPack[] = []
  private readonly buffer = Buffer.allocUnsafe(WRITE_BUFFER_BYTES)
  private bufferedBytes = 0
  private createdSinceSync = false

  constructor(packsDirectory: string, packSizeBytesMax: number, allocatePackId: () => number) {
    assert(packSizeBytesMax >= RECORD_BYTES_MAX, 'a pack holds at least one record')
    this.packsDirectory = packsDirectory
    this.packSizeBytesMax = packSizeBytesMax
    this.allocatePackId = allocatePackId
  }

  /** Continues an existing pack whose first `sizeBytes` are whole, durable records. */
  async resume(pack: PackSize): Promise<void> {
    assert(this.current === null, 'resume() comes before any append')
    const path = packPath(this.packsDirectory, pack.packId)
    const handle = await packCall(path, 'open', () => open(path, 'r+'))
    this.current = this.openPack(pack.packId, handle, pack.sizeBytes)
  }

  get currentPackId(): number | null {
    return this.current?.packId ?? null
  }

  /** Appends one record and says where it went; durable only after sync(). */
  async append(hash: Uint8Array, payload: Uint8Array): Promise<RecordLocation> {
    const size = RECORD_HEADER_BYTES + payload.length
    assert(size <= RECORD_BYTES_MAX, 'records are bounded by the chunk size maximum')
    let pack = this.current
    if (
      pack !== null &&
      this.sizeOf(pack) > 0 &&
      this.sizeOf(pack) + size > this.packSizeBytesMax
    ) {
      await this.writeBuffer(pack)
      pack.writeBehind.begin() // so that sync() has less left to wait for
      this.rolledOver.push(pack)
      pack = this.current = null
    }
    pack ??= this.current = await this.createPack()
    if (this.bufferedBytes + size > this.buffer.length) await this.writeBuffer(pack)
    const offset = this.sizeOf(pack)
    writeRecordHeader(this.buffer, this.bufferedBytes, hash, payload.length)
    this.buffer.set(payload, this.bufferedBytes + RECORD_HEADER_BYTES)
    this.bufferedBytes += size
    return { packId: pack.packId, offset, lengthBytes: payload.length }
  }

  /** A copy of a record still in the write buffer, or null when it is in its file. */
  readBuffered(location: RecordLocation): Buffer | null {
    const pack = this.current
    if (pack === null || location.packId !== pack.packId || location.offset < pack.writtenBytes) {
      return null
    }
    const start = location.offset - pack.writtenBytes
    const end = start + recordBytes(location)
    assert(end <= this.bufferedBytes, 'a buffered record lies inside the buffer')
    return Buffer.from(this.buffer.subarray(start, end))
  }

  /** Writes out the buffer and makes every pack written since the last sync durable. */
  async sync(): Promise<PackSize[]> {
    const pack = this.current
    if (pack !== null) await this.writeBuffer(pack)
    const written = [...this.rolledOver]
    if (pack?.writeBehind.pending === true) written.push(pack)
    for (const each of written) await each.writeBehind.settle()
    for (const each of this.rolledOver.splice(0)) await closePack(this.packsDirectory, each)
    if (this.createdSinceSync) {
      // A new file's name is durable only once its directory is synced.
      await syncDirectory(this.packsDirectory)
      this.createdSinceSync = false
    }
    return written.map((each) => ({ packId: each.packId, sizeBytes: each.writtenBytes }))
  }

  /** Syncs, then stops appending to the current pack: the next append starts a new one. */
  async seal(): Promise<PackSize[]> {
    const synced = await this.sync()
    const pack = this.current
    this.current = null
    if (pack !== null) await closePack(this.packsDirectory, pack)
    return synced
  }

  /** Closes every file without syncing: for a store that failed and must be reopened. */
  async abandon(): Promise<void> {
    const packs = [...this.rolledOver.splice(0), ...(this.current ? [this.current] : [])]
    this.current = null
    this.bufferedBytes = 0
    await Promise.allSettled(packs.map((pack) => pack.handle.close()))
  }

  private sizeOf(pack: OpenPack): number {
    return pack.writtenBytes + (pack === this.current ? this.bufferedBytes : 0)
  }

  private async createPack(): Promise<OpenPack> {
    const packId = this.allocatePackId()
    const path = packPath(this.packsDirectory, packId)
    const handle = await packCall(path, 'create', () => open(path, 'wx'))
    this.createdSinceSync = true
    return this.openPack(packId, handle, 0)
  }

  private openPack(packId: number, handle: FileHandle, writtenBytes: number): OpenPack {
    const path = packPath(this.packsDirectory, packId)
    const writeBehind = new WriteBehind(() => packCall(path, 'sync', () => handle.datasync()))
    return { packId, handle, writtenBytes, writeBehind }
  }

  private async writeBuffer(pack: OpenPack): Promise<void> {
    assert(pack === this.current, 'only the current pack has buffered bytes')
    const path = packPath(this.packsDirectory, pack.packId)
    let written = 0
    // Regular files take a whole write at once; the loop only guards against a short one.
    while (written < this.bufferedBytes) {
      const { bytesWritten } = await packCall(path, 'write', () =>
        pack.handle.write(
          this.buffer,
          written,
          this.bufferedBytes - written,
          pack.writtenBytes + written,
        ),
      )
      assert(bytesWritten > 0, 'a write makes progress')
      written += bytesWritten
    }
    pack.writtenBytes += this.bufferedBytes
    pack.writeBehind.written(this.bufferedBytes)
    this.bufferedBytes = 0
  }
}

async function closePack(packsDirectory: string, pack: OpenPack): Promise<void> {
  const path = packPath(packsDirectory, pack.packId)
  await packCall(path, 'close', () => pack.handle.close())
}

export async function syncDirectory(path: string): Promise<void> {
  await packCall(path, 'sync', async () => {
    const handle = await open(path, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  })
}

/** Runs a file operation, turning a failure into an IO_ERROR that names the file. */
export async function packCall<T>(
  path: string,
  action: string,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error)
    throw ClusterError.io(`chunk store: cannot ${action} ${path}: ${code}`, error)
  }
}

export interface ScannedRecord {
  readonly offset: number
  readonly hash: Buffer
  /** A view into the scan buffer, valid only until the callback's promise settles. */
  readonly payload: Buffer
}

/**
 * Walks the records of a pack from `fromOffset` to its end, checking each against its
 * hash, and stops at the first record that is partial or does not verify. Returns where
 * the last whole, valid record ends.
 */
export async function scanPack(
  packsDirectory: string,
  packId: number,
  fromOffset: number,
  onRecord: (record: ScannedRecord) => Promise<void> | void,
): Promise<number> {
  const path = packPath(packsDirectory, packId)
  const handle = await packCall(path, 'open', () => open(path, 'r'))
  try {
    const buffer = Buffer.allocUnsafe(SCAN_BUFFER_BYTES)
    let bufferFileOffset = fromOffset
    let start = 0
    let filled = 0
    for (;;) {
      buffer.copyWithin(0, start, filled)
      bufferFileOffset += start
      filled -= start
      start = 0
      const { bytesRead } = await packCall(path, 'read', () =>
        handle.read(buffer, filled, buffer.length - filled, bufferFileOffset + filled),
      )
      filled += bytesRead
      for (;;) {
        if (filled - start < RECORD_HEADER_BYTES) break // needs more bytes
        const header = readRecordHeader(buffer, start)
        if (header === null) return bufferFileOffset + start
        const end = start + RECORD_HEADER_BYTES + header.lengthBytes
        if (end > filled) break // needs more bytes
        const payload = buffer.subarray(start + RECORD_HEADER_BYTES, end)
        if (!sha256(payload).equals(header.hash)) {
          return bufferFileOffset + start
        }
        await onRecord({ offset: bufferFileOffset + start, hash: header.hash, payload })
        start = end
      }
      // What is left is the start of a record: partial if the file has no more bytes.
      if (bytesRead === 0) return bufferFileOffset + start
    }
  } finally {
    await handle.close()
  }
}
