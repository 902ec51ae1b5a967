// The hashing worker: a thread of its own that computes the SHA-256 of chunks, and of
// whole files, over read buffers it shares with the main thread (SharedArrayBuffers), so
// that no chunk byte is copied on its way. The main thread reads and cuts; this thread
// hashes what it is told, in the order it is told, and answers each request once done
// with its bytes. It keeps one whole-file hash per file being read, so several files may
// go through it at once. Started by hash-worker-client.ts, which holds the protocol's
// bounds; an assertion here crashes the worker, and the client reports that to every
// file it was hashing.
//
// This file runs in the worker only. It is loaded through tsx's CommonJS hooks (see the
// client), so it must not use import.meta or top-level await.
import { createHash, type Hash } from 'node:crypto'
import { parentPort, workerData } from 'node:worker_threads'
import { assert } from '../consensus/assert.ts'

/** What the client tells the worker when it starts it. */
export interface HashWorkerData {
  /** Files whose whole-file hash the worker may hold at once. */
  readonly filesMax: number
}

/**
 * One read turn of one file: add `buffer[fileStart, fileEnd)` to the file's hash, then hash
 * each chunk `buffer[chunkBounds[k], chunkBounds[k + 1])`. The file's hash begins with its
 * first turn and ends, digested, with the turn marked `last`.
 */
export interface HashTurnRequest {
  readonly kind: 'turn'
  readonly id: number
  readonly file: number
  readonly buffer: SharedArrayBuffer
  readonly fileStart: number
  readonly fileEnd: number
  /** Empty when no chunk ends in this turn; otherwise the first chunk's start, then each chunk's end. */
  readonly chunkBounds: readonly number[]
  readonly last: boolean
}

/** Forget a file whose read stopped before its last turn. */
export interface DropFileRequest {
  readonly kind: 'drop'
  readonly file: number
}

export type HashWorkerRequest = HashTurnRequest | DropFileRequest

/** The answer to a turn, sent once the worker no longer reads its buffer. */
export interface HashTurnReply {
  readonly id: number
  /** Lowercase hex, one per chunk, in order. */
  readonly chunkHashes: readonly string[]
  /** The file's hash in lowercase hex, on its last turn only. */
  readonly fileHash: string | null
}

const port = parentPort
assert(port !== null, 'hash-worker.ts runs as a worker thread')
const { filesMax } = workerData as HashWorkerData
assert(
  Number.isSafeInteger(filesMax) && filesMax > 0,
  'the worker is told how many files it may hold',
)
const fileHashes = new Map<number, Hash>()

port.on('message', (request: HashWorkerRequest) => {
  if (request.kind === 'drop') fileHashes.delete(request.file)
  else port.postMessage(hashTurn(request))
})

function hashTurn(request: HashTurnRequest): HashTurnReply {
  const { buffer, fileStart, fileEnd, chunkBounds } = request
  assert(buffer instanceof SharedArrayBuffer, 'turns are read into shared buffers')
  assert(0 <= fileStart && fileStart <= fileEnd && fileEnd <= buffer.byteLength, 'file range')
  const bytes = new Uint8Array(buffer)
  let fileHash = fileHashes.get(request.file)
  if (fileHash === undefined) {
    assert(fileHashes.size < filesMax, `at most ${filesMax} files are hashed at once`)
    fileHash = createHash('sha256')
    fileHashes.set(request.file, fileHash)
  }
  fileHash.update(bytes.subarray(fileStart, fileEnd))
  const chunkHashes: string[] = []
  for (let index = 1; index < chunkBounds.length; index++) {
    const start = chunkBounds[index - 1]!
    const end = chunkBounds[index]!
    assert(0 <= start && start < end && end <= buffer.byteLength, 'a chunk is a range of bytes')
    chunkHashes.push(createHash('sha256').update(bytes.subarray(start, end)).digest('hex'))
  }
  if (!request.last) return { id: request.id, chunkHashes, fileHash: null }
  fileHashes.delete(request.file)
  return { id: request.id, chunkHashes, fileHash: fileHash.digest('hex') }
}
