// The main thread's side of the hashing worker (hash-worker.ts): one long-lived worker per
// process, started when a file first needs it, serving every file read at once, each with
// its own whole-file hash. A file gives it the ranges of a read buffer (a
// SharedArrayBuffer, posted as itself: shared, never copied) and gets back its chunks as
// HashedChunks, views into that buffer marked with the hashes the worker computed over
// exactly those bytes.
//
// The worker is unref()'ed while nothing waits on it, so it never keeps a process alive;
// while a request is out it is ref()'ed, or a process awaiting only the worker's answer
// would end under it. If it stops (it crashed, or a test terminated it), every request
// still out fails with IO_ERROR naming the file, and the next file starts a new worker.
//
// The worker's TypeScript runs through tsx's CommonJS hooks, registered in the worker by
// a two-line bootstrap: the program registers tsx's ESM hooks programmatically
// (bin/clusterreplica.js), which a worker does not inherit, and ESM hooks registered in a
// worker start a loader thread of their own (measured: 100 ms to the worker's first
// message, against 27 ms this way). execArgv is empty for the same reason: an inherited
// `--import tsx` costs another 25 ms and does nothing the bootstrap does not.
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import type { ChunkHash } from './chunk-types.ts'
import { takeHashedChunkMarker, type FileHash, type HashedChunk } from './chunker.ts'
import type {
  HashTurnReply,
  HashTurnRequest,
  HashWorkerData,
  HashWorkerRequest,
} from './hash-worker.ts'

/**
 * Files the worker hashes at once; a file beyond them is hashed on the main thread. One
 * worker thread is no faster for more, and each file holds a buffer set meanwhile.
 */
export const FILES_HASHED_AT_ONCE_MAX = 4
/** Turns of one file out at the worker at once: the one just cut and the one before it. */
export const TURNS_HASHING_PER_FILE_MAX = 2

const WORKER_ENTRY = fileURLToPath(new URL('./hash-worker.ts', import.meta.url))
const TSX_COMMONJS_API = createRequire(import.meta.url).resolve('tsx/cjs/api')
const WORKER_BOOTSTRAP =
  `require(${JSON.stringify(TSX_COMMONJS_API)}).register()\n` +
  `require(${JSON.stringify(WORKER_ENTRY)})\n`

const markHashed = takeHashedChunkMarker()

/** A turn's chunks, hashed, and on the file's last turn its hash. */
export interface HashedTurn {
  readonly chunks: readonly HashedChunk[]
  readonly fileHash: FileHash | null
}

interface Waiting {
  readonly id: number
  readonly file: FileHashing
  readonly bytes: Buffer
  readonly chunkBounds: readonly number[]
  readonly resolve: (turn: HashedTurn) => void
  readonly reject: (error: ClusterError) => void
}

/** The worker thread and the requests it has not answered yet, oldest first. */
class HashWorkerThread {
  filesOpen = 0
  /** Why the worker stopped, once it has. */
  stopped: string | null = null
  private readonly worker: Worker
  private readonly waiting: Waiting[] = []
  private nextRequestId = 0
  private failure: Error | null = null

  constructor() {
    const workerData: HashWorkerData = { filesMax: FILES_HASHED_AT_ONCE_MAX }
    this.worker = new Worker(WORKER_BOOTSTRAP, { eval: true, execArgv: [], workerData })
    this.worker.unref()
    this.worker.on('message', (reply: HashTurnReply) => this.answer(reply))
    this.worker.on('error', (error) => (this.failure ??= error))
    this.worker.on('exit', (code) => this.stop(code))
  }

  request(request: HashTurnRequest, waiting: Omit<Waiting, 'id'>): void {
    assert(this.stopped === null, 'no request goes to a stopped worker')
    this.worker.postMessage(request satisfies HashWorkerRequest)
    this.waiting.push({ ...waiting, id: request.id })
    if (this.waiting.length === 1) this.worker.ref()
  }

  drop(file: number): void {
    if (this.stopped === null) this.worker.postMessage({ kind: 'drop', file } as HashWorkerRequest)
  }

  newRequestId(): number {
    return this.nextRequestId++
  }

  get threadId(): number {
    return this.worker.threadId
  }

  terminate(): Promise<number> {
    return this.worker.terminate()
  }

  private answer(reply: HashTurnReply): void {
    const waiting = this.waiting.shift()
    assert(waiting !== undefined && waiting.id === reply.id, 'the worker answers in order')
    if (this.waiting.length === 0) this.worker.unref()
    const { bytes, chunkBounds } = waiting
    assert(reply.chunkHashes.length === Math.max(0, chunkBounds.length - 1), 'a hash per chunk')
    const chunks = reply.chunkHashes.map((hash, index) =>
      markHashed(hash as ChunkHash, bytes.subarray(chunkBounds[index], chunkBounds[index + 1])),
    )
    waiting.resolve({ chunks, fileHash: reply.fileHash as FileHash | null })
  }

  private stop(code: number): void {
    this.stopped =
      this.failure === null ? `exit code ${code}` : `${this.failure.message}, exit code ${code}`
    if (running === this) running = null
    for (const waiting of this.waiting.splice(0))
      waiting.reject(
        ClusterError.io(
          `cannot hash ${waiting.file.name}: the hashing worker stopped (${this.stopped})`,
        ),
      )
  }
}

let running: HashWorkerThread | null = null
let nextFileId = 0

/**
 * One file's hashing in the worker: its turns in order, the last one marked, then end().
 * Each turn's buffer must stay as it is until that turn is answered.
 */
export class FileHashing {
  readonly name: string
  private readonly thread: HashWorkerThread
  private readonly id = nextFileId++
  private turnsOut = 0
  private finished = false
  private ended = false

  constructor(thread: HashWorkerThread, name: string) {
    this.thread = thread
    this.name = name
    thread.filesOpen++
  }

  /**
   * Adds `bytes[fileStart, fileEnd)` to the file's hash and hashes the chunks between the
   * `chunkBounds` (the first chunk's start, then each chunk's end; empty when none ends).
   */
  hashTurn(
    bytes: Buffer,
    fileStart: number,
    fileEnd: number,
    chunkBounds: readonly number[],
    last: boolean,
  ): Promise<HashedTurn> {
    assert(!this.finished && !this.ended, 'no turn after the last one')
    assert(this.turnsOut < TURNS_HASHING_PER_FILE_MAX, 'a file has few turns out at the worker')
    assert(bytes.buffer instanceof SharedArrayBuffer, 'the worker reads shared buffers only')
    assert(bytes.byteOffset === 0 && bytes.length === bytes.buffer.byteLength, 'a whole buffer')
    assert(0 <= fileStart && fileStart <= fileEnd && fileEnd <= bytes.length, 'file range')
    assert(chunkBounds.length !== 1, 'a chunk has a start and an end')
    for (let index = 1; index < chunkBounds.length; index++)
      assert(chunkBounds[index - 1]! < chunkBounds[index]!, 'chunks are in order and not empty')
    assert((chunkBounds.at(-1) ?? 0) <= bytes.length, 'chunks lie inside the buffer')
    this.finished = last
    if (this.thread.stopped !== null)
      return Promise.reject(
        ClusterError.io(
          `cannot hash ${this.name}: the hashing worker stopped (${this.thread.stopped})`,
        ),
      )
    const request: HashTurnRequest = {
      kind: 'turn',
      id: this.thread.newRequestId(),
      file: this.id,
      buffer: bytes.buffer,
      fileStart,
      fileEnd,
      chunkBounds,
      last,
    }
    this.turnsOut++
    const answered = new Promise<HashedTurn>((resolve, reject) =>
      this.thread.request(request, { file: this, bytes, chunkBounds, resolve, reject }),
    )
    const settled = (): void => {
      this.turnsOut--
    }
    answered.then(settled, settled)
    return answered
  }

  /** Frees the file's place at the worker; a file ended before its last turn is dropped there. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.thread.filesOpen--
    if (!this.finished) this.thread.drop(this.id)
  }
}

/**
 * Starts a file's hashing in the worker (starting the worker first if none runs), or null
 * when the worker already hashes FILES_HASHED_AT_ONCE_MAX files.
 */
export function startFileHashing(name: string): FileHashing | null {
  running ??= new HashWorkerThread()
  assert(
    running.filesOpen <= FILES_HASHED_AT_ONCE_MAX,
    'the worker holds a bounded number of files',
  )
  if (running.filesOpen === FILES_HASHED_AT_ONCE_MAX) return null
  return new FileHashing(running, name)
}

/** For tests: the running worker's thread id, or null when none runs. */
export function hashWorkerThreadId(): number | null {
  return running?.threadId ?? null
}

/**
 * For tests: stops the running worker as a crash would (requests still out fail, the next
 * file starts a new worker). False when no worker was running.
 */
export async function terminateHashWorker(): Promise<boolean> {
  const thread = running
  if (thread === null) return false
  await thread.terminate()
  return true
}
