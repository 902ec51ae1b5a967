// Restoring large files: the reader reads chunks in groups, many per read, ahead of the
// writer; the writer gathers pieces into few writes and syncs in the background as it
// goes. Each must give the same bytes as before, fail a damaged chunk where it lies, and
// report a sync that failed in the background.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'node:child_process'
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isClusterError } from '../../consensus/cluster-error.ts'
import { READ_AHEAD_GROUPS, READ_GROUP_CHUNKS } from '../../storage/dataset-reader.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { RECORD_HEADER_BYTES } from '../../storage/pack-format.ts'
import { WRITE_BYTES_MAX, WRITE_PIECES_MAX, writeFileAtomically } from '../../storage/restore.ts'
import type { DatasetPath } from '../../storage/version-record.ts'
import { WRITE_BEHIND_BYTES, WriteBehind } from '../../storage/write-behind.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { findRecord, packFiles } from './fixtures/chunk-store-files.ts'
import { PAST_MTIME_MS, contentBytes, writeDatasetFile } from './fixtures/dataset-tree.ts'

const MiB = 1024 * 1024

async function withDataset<T>(data: string, body: (dataset: Dataset) => Promise<T>): Promise<T> {
  const store = await NodeStore.open(data)
  try {
    return await body(await store.ownDataset('dataset'))
  } finally {
    await store.close()
  }
}

test('pieces of every size, more than one write holds, are written whole, in order', () =>
  withTempDir(async (directory) => {
    const content = contentBytes('pieces', WRITE_BEHIND_BYTES + 3 * MiB + 17)
    const pieces: Uint8Array[] = []
    // Many tiny pieces (more than one writev takes), empty ones, and pieces over a write's size.
    for (let offset = 0, turn = 0; offset < content.length; turn++) {
      const size =
        turn < 3 * WRITE_PIECES_MAX ? turn % 3 : turn % 5 === 0 ? 2 * WRITE_BYTES_MAX : 70_001
      pieces.push(content.subarray(offset, offset + size))
      offset += size
    }
    const written = await writeFileAtomically(directory, 'file', pieces, 0o640, PAST_MTIME_MS)
    assert.is(written, content.length)
    assert.ok((await readFile(join(directory, 'file'))).equals(content))
    const stats = await stat(join(directory, 'file'))
    assert.is(stats.mode & 0o777, 0o640)
    assert.is(Math.round(stats.mtimeMs), PAST_MTIME_MS)
    assert.equal(await readdir(directory), ['file'])
  }))

test('a background sync that failed is reported, even when a later sync succeeds', () =>
  withTempDir(async (directory) => {
    // fsync of a FIFO fails (EINVAL) for real; a regular file's succeeds.
    const fifo = join(directory, 'fifo')
    execFileSync('mkfifo', [fifo])
    const fifoHandle = await open(fifo, 'r+')
    const fileHandle = await open(join(directory, 'file'), 'w')
    try {
      let syncs = 0
      const writeBehind = new WriteBehind(() =>
        (syncs++ === 0 ? fifoHandle : fileHandle).datasync(),
      )
      writeBehind.written(WRITE_BEHIND_BYTES) // begins the sync that fails
      assert.ok(writeBehind.pending)
      writeBehind.written(1)
      try {
        await writeBehind.settle() // syncs the last byte, which succeeds
        assert.unreachable('the failed sync must be reported')
      } catch (error) {
        assert.is((error as NodeJS.ErrnoException).code, 'EINVAL')
      }
      assert.is(syncs, 2)
      assert.not.ok(writeBehind.pending)
      await writeBehind.settle() // reported once; nothing is left to sync
      assert.is(syncs, 2)
    } finally {
      await fifoHandle.close()
      await fileHandle.close()
    }
  }))

test('a file of many read groups restores byte-exact; a damaged chunk in its middle fails it whole', () =>
  withTempDir(async (directory) => {
    const chunksMin = 3 * READ_GROUP_CHUNKS * READ_AHEAD_GROUPS
    const content = contentBytes('large-restore', chunksMin * 64 * 1024 + 12345)
    const root = join(directory, 'set')
    await writeDatasetFile(root, 'large.bin', content)
    const data = join(directory, 'data')
    const middleChunk = await withDataset(data, async (dataset) => {
      await dataset.scan(root)
      const version = await dataset.reader.fileVersion('large.bin' as DatasetPath)
      const chunks = await dataset.reader.chunkList(version)
      assert.ok(chunks.length >= chunksMin / 2, `${chunks.length} chunks`)
      await dataset.restore({
        point: { length: dataset.log.length },
        destination: join(directory, 'good'),
      })
      assert.ok((await readFile(join(directory, 'good', 'large.bin'))).equals(content))
      return chunks[Math.floor(chunks.length / 2)]!.hash
    })

    for (const pack of await packFiles(join(data, 'chunks'))) {
      const { offset, file } = await findRecord(pack, middleChunk)
      if (offset < 0) continue
      const at = offset + RECORD_HEADER_BYTES + 1000
      file[at] = file[at]! ^ 0xff
      await writeFile(pack, file)
    }
    await withDataset(data, async (dataset) => {
      const destination = join(directory, 'damaged')
      try {
        await dataset.restore({
          point: { length: dataset.log.length },
          path: 'large.bin',
          destination,
        })
        assert.unreachable('a damaged chunk must fail the restore')
      } catch (error) {
        assert.ok(isClusterError(error, 'HASH_MISMATCH'), String(error))
        assert.match((error as Error).message, middleChunk)
      }
      assert.equal(await readdir(destination), [], 'no file, whole or temporary, is left')
    })
  }))

test.run()
