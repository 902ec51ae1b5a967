// The hashing worker behind chunkAndHashFile: real files on disk, cut and hashed in the
// worker, must give exactly what the in-memory chunker and a plain SHA-256 give; files
// share the worker; a worker that dies fails its files clearly and is replaced; and a
// process that used it still ends on its own.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash, ChunkStoreApi } from '../../storage/chunk-types.ts'
import { CHUNK_SIZE_MAX_BYTES } from '../../storage/chunk-types.ts'
import {
  findChunkEnds,
  hashChunk,
  isHashedChunk,
  takeHashedChunkMarker,
} from '../../storage/chunker.ts'
import {
  FILE_READ_BYTES,
  READ_BUFFERS_PER_FILE,
  SMALL_FILE_BYTES_MAX,
  chunkAndHashFile,
  type ChunkFileOptions,
  type ChunkedFile,
} from '../../storage/file-chunker.ts'
import {
  FILES_HASHED_AT_ONCE_MAX,
  hashWorkerThreadId,
  terminateHashWorker,
} from '../../storage/hash-worker-client.ts'
import { ingestFile } from '../../storage/ingest.ts'
import type { ChunkReference, DatasetPath } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import { seededBytes } from './fixtures/seeded-bytes.ts'

const CHILD_SCRIPT = new URL('./fixtures/hash-worker-child.ts', import.meta.url).href
const CHILD_EXIT_MS_MAX = 30_000

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/** What the in-memory chunker and a plain SHA-256 make of `content`. */
function expectedOf(content: Buffer): ChunkedFile {
  let start = 0
  const chunks: ChunkReference[] = findChunkEnds(content).map((end) => {
    const chunk = { hash: hashChunk(content.subarray(start, end)), lengthBytes: end - start }
    start = end
    return chunk
  })
  return { fileHash: sha256(content) as ChunkedFile['fileHash'], sizeBytes: content.length, chunks }
}

/** A random start, then a pattern of a prime period: chunks of the maximum size that do not line up with the reads. */
function patterned(seed: string, sizeBytes: number): Buffer {
  const bytes = Buffer.alloc(sizeBytes)
  for (let index = 0; index < sizeBytes; index++) bytes[index] = ((index % 251) * 7) % 256
  seededBytes(seed, Math.min(sizeBytes, 100_000)).copy(bytes)
  return bytes
}

interface Chunked {
  readonly file: ChunkedFile
  /** The bytes each store saw, in file order. */
  readonly stored: Buffer
  readonly allMarked: boolean
}

/** Chunks a file, keeping a copy of what every store saw, each store taking a little while. */
async function chunkFile(path: string, options: ChunkFileOptions = {}): Promise<Chunked> {
  const copies: Buffer[] = []
  let allMarked = true
  let calls = 0
  const { file, stored } = await chunkAndHashFile(path, options, async (chunk) => {
    allMarked &&= isHashedChunk(chunk) && Object.isFrozen(chunk)
    const index = copies.length
    copies.push(Buffer.alloc(0))
    if (++calls % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 1))
    // The bytes must still be what the worker hashed when the store looks at them.
    assert.is(hashChunk(chunk.bytes), chunk.hash)
    copies[index] = Buffer.from(chunk.bytes)
  })
  await stored
  return { file, stored: Buffer.concat(copies), allMarked }
}

async function expectSame(
  path: string,
  content: Buffer,
  what: string,
  options: ChunkFileOptions = {},
): Promise<void> {
  const { file, stored, allMarked } = await chunkFile(path, options)
  const expected = expectedOf(content)
  assert.is(file.fileHash, expected.fileHash, `${what}: file hash`)
  assert.is(file.sizeBytes, expected.sizeBytes, `${what}: size`)
  assert.equal(file.chunks, expected.chunks, `${what}: chunks`)
  assert.ok(stored.equals(content), `${what}: the stores saw the file's bytes, in order`)
  assert.ok(allMarked, `${what}: every chunk is marked as hashed in this process`)
}

function crossesRead(chunks: readonly ChunkReference[]): boolean {
  let start = 0
  return chunks.some(({ lengthBytes }) => {
    const crosses =
      Math.floor(start / FILE_READ_BYTES) !==
      Math.floor((start + lengthBytes - 1) / FILE_READ_BYTES)
    start += lengthBytes
    return crosses
  })
}

test('a file whose first read is short is hashed on the main thread: no worker starts', async () => {
  await terminateHashWorker() // one that other test files in this process started
  assert.is(hashWorkerThreadId(), null)
  await withTempDir(async (directory) => {
    for (const sizeBytes of [0, 1, 100_000, FILE_READ_BYTES - 1]) {
      const content = seededBytes(`small-${sizeBytes}`, sizeBytes)
      const path = join(directory, `small-${sizeBytes}`)
      await writeFile(path, content)
      await expectSame(path, content, `${sizeBytes} bytes`)
    }
    assert.is(hashWorkerThreadId(), null)
  })
})

test('a file said to be small is read in one read, and one that grew past that is read as a big one', async () => {
  await withTempDir(async (directory) => {
    for (const [sizeBytes, hint] of [
      [0, 0],
      [1, 1],
      [300_000, 300_000],
      [SMALL_FILE_BYTES_MAX, SMALL_FILE_BYTES_MAX],
      [SMALL_FILE_BYTES_MAX + 1, SMALL_FILE_BYTES_MAX], // grew by a byte since it was looked at
      [3 * FILE_READ_BYTES, 1000], // grew a lot
      [500, 400_000], // shrank
    ] as const) {
      const content = seededBytes(`hinted-${sizeBytes}-${hint}`, sizeBytes)
      const path = join(directory, `hinted-${sizeBytes}-${hint}`)
      await writeFile(path, content)
      await expectSame(path, content, `${sizeBytes} bytes said to be ${hint}`, {
        sizeHintBytes: hint,
      })
    }
  })
})

test('files of many sizes hash in the worker exactly as in memory', async () => {
  await withTempDir(async (directory) => {
    const many = READ_BUFFERS_PER_FILE + 2 // every buffer read into again
    const cases: [string, Buffer][] = [
      ['one whole read', seededBytes('one-read', FILE_READ_BYTES)],
      ['one read and a byte', seededBytes('read-and-byte', FILE_READ_BYTES + 1)],
      ['two reads less a byte', seededBytes('two-less', 2 * FILE_READ_BYTES - 1)],
      ['three whole reads', seededBytes('three', 3 * FILE_READ_BYTES)],
      ['many reads and a tail', seededBytes('many', many * FILE_READ_BYTES + 12345)],
      ['largest chunks across reads', patterned('across', many * FILE_READ_BYTES + 54321)],
      ['uniform bytes', Buffer.alloc(3 * FILE_READ_BYTES + CHUNK_SIZE_MAX_BYTES / 2, 7)],
    ]
    for (const [what, content] of cases) {
      const path = join(directory, 'file')
      await writeFile(path, content)
      await expectSame(path, content, what)
      assert.ok(hashWorkerThreadId() !== null, `${what}: the worker hashed it`)
    }
    const across = expectedOf(cases[5]![1])
    assert.ok(crossesRead(across.chunks), 'some chunks begin in one read and end in the next')
  })
})

test('several files at once share the worker, each with its own file hash', async () => {
  await withTempDir(async (directory) => {
    // More files than the worker takes at once: the rest are hashed on the main thread.
    const files = Array.from({ length: FILES_HASHED_AT_ONCE_MAX + 2 }, (_, index) => {
      const sizeBytes = (2 + (index % 3)) * FILE_READ_BYTES + index * 7777
      const content =
        index % 2 === 0
          ? seededBytes(`many-${index}`, sizeBytes)
          : patterned(`many-${index}`, sizeBytes)
      return { path: join(directory, `file-${index}`), content }
    })
    for (const { path, content } of files) await writeFile(path, content)
    const threadId = hashWorkerThreadId()
    await Promise.all(files.map(({ path, content }) => expectSame(path, content, path)))
    assert.is(hashWorkerThreadId(), threadId, 'one worker served them all')
  })
})

test('a file stopped mid-read is dropped at the worker, which goes on serving', async () => {
  await withTempDir(async (directory) => {
    const content = seededBytes('stopped', 4 * FILE_READ_BYTES)
    const path = join(directory, 'file')
    await writeFile(path, content)
    const threadId = hashWorkerThreadId()
    // More stopped files than the worker holds at once: each must have been forgotten.
    for (let stop = 0; stop < 2 * FILES_HASHED_AT_ONCE_MAX; stop++) {
      const controller = new AbortController()
      try {
        await chunkAndHashFile(path, { signal: controller.signal }, async () => controller.abort())
        assert.unreachable('an aborted read must throw')
      } catch (error) {
        assert.is((error as Error).name, 'AbortError')
      }
    }
    await expectSame(path, content, 'after the stopped files')
    assert.is(hashWorkerThreadId(), threadId, 'the worker did not crash')
  })
})

test('a worker that dies mid-file fails the file clearly; the next file starts a new worker', async () => {
  await withTempDir(async (directory) => {
    const content = seededBytes('killed', 6 * FILE_READ_BYTES + 999)
    const path = join(directory, 'file')
    await writeFile(path, content)
    const before = hashWorkerThreadId()
    assert.ok(before !== null)
    let killed = false
    try {
      const { stored } = await chunkAndHashFile(path, {}, async () => {
        if (killed) return
        killed = true
        assert.ok(await terminateHashWorker(), 'a worker was running')
      })
      await stored
      assert.unreachable('the file must fail with its worker')
    } catch (error) {
      assert.ok(isClusterError(error, 'IO_ERROR'), String(error))
      assert.match((error as Error).message, `cannot hash ${path}: the hashing worker stopped`)
    }
    assert.is(hashWorkerThreadId(), null, 'the dead worker is let go')
    await expectSame(path, content, 'after the crash')
    const after = hashWorkerThreadId()
    assert.ok(after !== null && after !== before, 'a new worker hashed it')
  })
})

test('an ingest whose worker dies reports the file with the clear error', async () => {
  await withTempDir(async (directory) => {
    const content = seededBytes('ingest-killed', 3 * FILE_READ_BYTES)
    await writeFile(join(directory, 'file'), content)
    const stored = new Map<ChunkHash, Uint8Array>()
    let killed = false
    const chunkStore = {
      has: async (hash: ChunkHash) => stored.has(hash),
      put: async (hash: ChunkHash, bytes: Uint8Array) => {
        if (!killed) {
          killed = true
          await terminateHashWorker()
        }
        stored.set(hash, Buffer.from(bytes))
        return true
      },
    } as unknown as ChunkStoreApi
    const ingest = () =>
      ingestFile({ absolutePath: join(directory, 'file'), path: 'file' as DatasetPath, chunkStore })
    const outcome = await ingest()
    assert.ok(outcome.kind === 'skipped', 'the file is not taken')
    assert.is(outcome.problem.code, 'IO_ERROR')
    assert.match(outcome.problem.message, 'the hashing worker stopped')
    const again = await ingest()
    assert.ok(again.kind === 'ingested', 'the next ingest takes it')
    assert.is(again.version.fileHash, sha256(content))
  })
})

test('the hashed-chunk marker is handed out once, to the worker client', () => {
  assert.throws(() => takeHashedChunkMarker(), /taken once/)
})

test('a process that used the worker ends on its own, run as the program runs', async () => {
  await withTempDir(async (directory) => {
    const content = seededBytes('child', 3 * FILE_READ_BYTES + 4321)
    const path = join(directory, 'file')
    await writeFile(path, content)
    // As bin/clusterreplica.js runs the program: tsx registered from code, no --import.
    const tsx = import.meta.resolve('tsx/esm/api')
    const bootstrap = `import { register } from ${JSON.stringify(tsx)}\nregister()\nawait import(${JSON.stringify(CHILD_SCRIPT)})`
    const child = spawn(process.execPath, ['--input-type=module', '-e', bootstrap, path], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (data: Buffer) => (stdout += data.toString()))
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()))
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        resolve(null)
      }, CHILD_EXIT_MS_MAX)
      child.on('close', (exitCode) => {
        clearTimeout(timer)
        resolve(exitCode)
      })
    })
    assert.ok(
      code !== null,
      `the child did not end within ${CHILD_EXIT_MS_MAX} ms: ${stdout}${stderr}`,
    )
    assert.is(code, 0, stderr)
    const line = JSON.parse(stdout) as {
      fileHash: string
      chunks: number
      workerThreadId: number | null
    }
    assert.is(line.fileHash, sha256(content))
    assert.is(line.chunks, findChunkEnds(content).length)
    assert.ok(line.workerThreadId !== null, 'the child hashed in its worker')
  })
})

test.run()
