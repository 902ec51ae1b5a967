import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'node:child_process'
import { mkdir, open, readFile, stat, utimes } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { ClusterErrorCode } from '../../consensus/cluster-error.ts'
import type { ChunkHash, ChunkStoreApi } from '../../storage/chunk-types.ts'
import type { HashedChunk } from '../../storage/chunker.ts'
import {
  INGEST_TRIES_MAX,
  appendAfterFlush,
  ingestFile,
  recordFile,
  type IngestOutcome,
} from '../../storage/ingest.ts'
import { NodeStore } from '../../storage/node-store.ts'
import { logSeq, type DatasetPath, type RecordDraft } from '../../storage/version-record.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { StoreChild } from './fixtures/child-process.ts'
import {
  PAST_MTIME_MS,
  contentBytes,
  readAll,
  sha256,
  writeDatasetFile,
} from './fixtures/dataset-tree.ts'

const path = (text: string): DatasetPath => text as DatasetPath

async function withStore(
  body: (store: NodeStore, directory: string) => Promise<void>,
): Promise<void> {
  const directory = await makeTempDir('ingest-')
  const store = await NodeStore.open(join(directory, 'data'))
  try {
    await body(store, directory)
  } finally {
    await store.close()
    await removeDir(directory)
  }
}

/** The outcome of an ingest that must have succeeded. */
async function ingested(
  outcome: Promise<IngestOutcome>,
): Promise<Extract<IngestOutcome, { kind: 'ingested' }>> {
  const result = await outcome
  if (result.kind === 'skipped') assert.unreachable(`skipped: ${result.problem.message}`)
  return result as Extract<IngestOutcome, { kind: 'ingested' }>
}

/** The file was skipped for `code`: reported, not thrown. */
async function expectSkipped(
  outcome: Promise<IngestOutcome>,
  code: ClusterErrorCode,
): Promise<void> {
  const result = await outcome
  assert.is(result.kind === 'skipped' && result.problem.code, code)
}

/** The bytes of an ingested version, read back chunk by chunk from the store. */
async function storedBytes(
  chunkStore: ChunkStoreApi,
  chunks: readonly { hash: ChunkHash }[],
): Promise<Buffer> {
  return Buffer.concat(
    await Promise.all(chunks.map(async (chunk) => Buffer.from(await chunkStore.get(chunk.hash)))),
  )
}

test('a file is cut, hashed and stored in one pass, with its size, mode and mtime', () =>
  withStore(async (store, directory) => {
    const content = contentBytes('one', 1_000_000)
    await writeDatasetFile(join(directory, 'set'), 'f.bin', content, {
      mode: 0o640,
      mtimeMs: PAST_MTIME_MS + 123,
    })
    const { version, identity } = await ingested(
      ingestFile({
        absolutePath: join(directory, 'set', 'f.bin'),
        path: path('f.bin'),
        chunkStore: store.chunkStore,
      }),
    )
    assert.is(version.sizeBytes, content.length)
    assert.is(version.fileHash, sha256(content))
    assert.is(version.mode, 0o640)
    assert.is(version.mtimeMs, PAST_MTIME_MS + 123)
    assert.ok(version.chunks.length > 3, 'a megabyte makes several chunks')
    assert.is(identity.sizeBytes, content.length)
    assert.ok((await storedBytes(store.chunkStore, version.chunks)).equals(content))
  }))

test('an empty file is a version with no chunks', () =>
  withStore(async (store, directory) => {
    await writeDatasetFile(directory, 'empty', '')
    const { version } = await ingested(
      ingestFile({
        absolutePath: join(directory, 'empty'),
        path: path('empty'),
        chunkStore: store.chunkStore,
      }),
    )
    assert.equal([version.sizeBytes, version.chunks.length, version.fileHash], [0, 0, sha256('')])
  }))

test('chunks are flushed before the record is appended', () =>
  withStore(async (store, directory) => {
    const dataset = await store.ownDataset('dataset')
    const calls: string[] = []
    // The real chunk store and log, with their calls noted in order.
    const noting: ChunkStoreApi = Object.create(store.chunkStore, {
      put: {
        value: (hash: ChunkHash, bytes: Uint8Array) => (
          calls.push('put'),
          store.chunkStore.put(hash, bytes)
        ),
      },
      putHashed: {
        value: (chunk: HashedChunk) => (calls.push('put'), store.chunkStore.putHashed(chunk)),
      },
      flush: { value: () => (calls.push('flush'), store.chunkStore.flush()) },
    }) as ChunkStoreApi
    const log = Object.create(dataset.log, {
      append: {
        value: (drafts: readonly RecordDraft[]) => (
          calls.push('append'),
          dataset.log.append(drafts)
        ),
      },
    }) as typeof dataset.log
    await writeDatasetFile(directory, 'f', contentBytes('flush', 200_000))
    const { seq, version } = await recordFile({
      absolutePath: join(directory, 'f'),
      path: path('f'),
      chunkStore: noting,
      log,
    })
    const puts = calls.filter((call) => call === 'put').length
    assert.is(puts, version.chunks.length)
    assert.equal(calls.slice(puts), ['flush', 'append'])
    const record = await dataset.log.read(seq)
    assert.is(record.kind === 'put' && record.fileHash, version.fileHash)
    // The helper on its own: flush, then append.
    calls.length = 0
    await appendAfterFlush(noting, log, [{ kind: 'delete', path: path('f') }])
    assert.equal(calls, ['flush', 'append'])
  }))

test('a 4 KiB edit in the middle of a 32 MiB file adds at most 2 chunks and one record', () =>
  withStore(async (store, directory) => {
    const dataset = await store.ownDataset('dataset')
    const root = join(directory, 'set')
    await writeDatasetFile(root, 'large.bin', contentBytes('large', 32 * 1024 * 1024))
    await utimes(root, PAST_MTIME_MS / 1000, PAST_MTIME_MS / 1000)
    const first = await dataset.scan(root)
    assert.equal(
      first.changes.map((change) => change.kind),
      ['put'],
    )
    const chunksBefore = (await store.chunkStore.stats()).chunks
    const lengthBefore = dataset.log.length

    const handle = await open(join(root, 'large.bin'), 'r+')
    await handle.write(contentBytes('edit', 4096), 0, 4096, 16 * 1024 * 1024 + 1000)
    await handle.close()
    await utimes(join(root, 'large.bin'), PAST_MTIME_MS / 1000 + 60, PAST_MTIME_MS / 1000 + 60)
    const second = await dataset.scan(root)

    assert.equal(
      second.changes.map((change) => change.kind),
      ['put'],
    )
    assert.is(dataset.log.length, lengthBefore + 1)
    const added = (await store.chunkStore.stats()).chunks - chunksBefore
    assert.ok(added >= 1 && added <= 2, `${added} new chunks`)
    const stored = await readAll(
      await dataset.reader.open(await dataset.reader.fileVersion(path('large.bin'))),
    )
    assert.ok(stored.equals(await readFile(join(root, 'large.bin'))))
  }))

test('a file growing while it is read is FILE_UNSTABLE or stored as one consistent state, never torn', () =>
  withStore(async (store, directory) => {
    const file = join(directory, 'growing.log')
    await writeDatasetFile(directory, 'growing.log', contentBytes('grow', 8 * 1024 * 1024))
    const writer = new StoreChild(['grow', file])
    try {
      await writer.waitForLine((line) => line.event === 'started')
      const outcomes: string[] = []
      for (let round = 0; round < 4; round++) {
        const outcome = await ingestFile({
          absolutePath: file,
          path: path('growing.log'),
          chunkStore: store.chunkStore,
        })
        if (outcome.kind === 'skipped') {
          assert.is(outcome.problem.code, 'FILE_UNSTABLE')
          assert.match(outcome.problem.message, `${INGEST_TRIES_MAX} times`)
          outcomes.push('unstable')
          continue
        }
        const { version } = outcome
        const bytes = await storedBytes(store.chunkStore, version.chunks)
        // A consistent state of an append-only file is a prefix of what it holds now.
        assert.is(bytes.length, version.sizeBytes)
        assert.is(sha256(bytes), version.fileHash)
        const now = await readFile(file)
        assert.ok(
          now.subarray(0, bytes.length).equals(bytes),
          'stored bytes are a state the file had',
        )
        outcomes.push('stored')
      }
      assert.ok(outcomes.includes('unstable'), `outcomes: ${outcomes.join(', ')}`)
    } finally {
      await writer.kill()
    }
  }))

test('files that vanish or are not regular files are refused with clear codes', () =>
  withStore(async (store, directory) => {
    const ingest = (name: string): Promise<IngestOutcome> =>
      ingestFile({
        absolutePath: join(directory, name),
        path: path(name),
        chunkStore: store.chunkStore,
      })
    await expectSkipped(ingest('never-there'), 'NOT_FOUND')
    await mkdir(join(directory, 'a-directory'))
    await expectSkipped(ingest('a-directory'), 'FILE_UNSTABLE')
    execFileSync('mkfifo', [join(directory, 'a-fifo')])
    await expectSkipped(ingest('a-fifo'), 'FILE_UNSTABLE') // opened without blocking, then refused
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(join(directory, 'a-socket'), resolve))
    try {
      await expectSkipped(ingest('a-socket'), 'FILE_UNSTABLE')
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
    await writeDatasetFile(directory, 'target', 'x')
    execFileSync('ln', ['-s', 'target', join(directory, 'a-link')])
    await expectSkipped(ingest('a-link'), 'FILE_UNSTABLE') // a link is never followed
    assert.ok((await stat(join(directory, 'target'))).isFile())
  }))

test('a failing chunk store is thrown, not taken for a problem of the file', async () => {
  const directory = await makeTempDir('ingest-store-')
  try {
    const store = await NodeStore.open(join(directory, 'data'))
    await store.close()
    await writeDatasetFile(directory, 'f', 'content')
    const closed = ingestFile({
      absolutePath: join(directory, 'f'),
      path: path('f'),
      chunkStore: store.chunkStore,
    })
    await closed.then(
      (outcome) => assert.unreachable(`an outcome instead of a throw: ${outcome.kind}`),
      () => undefined,
    )
  } finally {
    await removeDir(directory)
  }
})

test('a stored version reads back through the log record', () =>
  withStore(async (store, directory) => {
    const dataset = await store.ownDataset('dataset')
    await writeDatasetFile(directory, 'f', 'content')
    const { seq } = await recordFile({
      absolutePath: join(directory, 'f'),
      path: path('f'),
      chunkStore: store.chunkStore,
      log: dataset.log,
    })
    assert.is(seq, logSeq(0))
    await dataset.refresh()
    const entry = await dataset.reader.fileVersion(path('f'), { seq })
    assert.is((await readAll(await dataset.reader.open(entry))).toString(), 'content')
  }))

test.run()
