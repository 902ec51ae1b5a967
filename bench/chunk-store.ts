// Chunk store throughput and space, each beside a reference measured in the same run on
// the same bytes: writing is put() of every chunk plus flush() (a peer's chunks, each
// hashed again), and putHashed() plus flush() (an ingest's, hashed once by the chunker),
// against one writeFile and fsync of the same bytes; reading is a verified get() of every
// chunk, and getMany() of groups of them (a restore's reads), from a reopened store,
// against one readFile. Disk use is every byte under the store's directory (packs and
// index) per unique byte stored.
//
//   node --import tsx bench/chunk-store.ts [MiB, default 256 | --json]
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, readFile, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ChunkStore } from '../storage/chunk-store.ts'
import { chunkBytes, type HashedChunk } from '../storage/chunker.ts'
import { READ_GROUP_CHUNKS } from '../storage/dataset-reader.ts'

/** Puts or gets awaited together: enough to overlap index look-ups with hashing. */
const OPERATIONS_IN_FLIGHT_MAX = 32
const MEGABYTE = 1_000_000

export interface ChunkStoreBenchFigures {
  /** Each figure is the median of this many rounds. */
  readonly rounds: number
  readonly uniqueBytes: number
  readonly chunks: number
  readonly writeMBps: number
  readonly hashedWriteMBps: number
  readonly referenceWriteMBps: number
  readonly duplicatePutMBps: number
  readonly readMBps: number
  readonly groupReadMBps: number
  readonly referenceReadMBps: number
  readonly diskBytesPerUniqueByte: number
}

/**
 * Runs `rounds` measurements, each on a fresh store and reference file, after one
 * unmeasured warm-up on an eighth of the data, and returns each figure's median: the
 * machines this runs on are shared, and one run swings by a factor of two.
 */
export async function runChunkStoreBench(
  options: { readonly totalBytes?: number; readonly rounds?: number } = {},
): Promise<ChunkStoreBenchFigures> {
  const data = randomBytes(options.totalBytes ?? 256 * 1024 * 1024)
  const chunks = chunkBytes(data)
  const directory = await mkdtemp(join(tmpdir(), 'chunk-store-bench-'))
  try {
    const warmUp = data.subarray(0, Math.floor(data.length / 8))
    await measureRound(join(directory, 'warm-up'), warmUp, chunkBytes(warmUp), 0)
    const rounds: ChunkStoreBenchFigures[] = []
    for (let round = 0; round < (options.rounds ?? 3); round++) {
      rounds.push(await measureRound(join(directory, `round-${round}`), data, chunks, round))
    }

    const median = (figure: (each: ChunkStoreBenchFigures) => number): number => {
      const sorted = rounds.map(figure).sort((a, b) => a - b)
      return sorted[Math.floor(sorted.length / 2)]!
    }
    return {
      rounds: rounds.length,
      uniqueBytes: data.length,
      chunks: chunks.length,
      writeMBps: median((each) => each.writeMBps),
      hashedWriteMBps: median((each) => each.hashedWriteMBps),
      referenceWriteMBps: median((each) => each.referenceWriteMBps),
      duplicatePutMBps: median((each) => each.duplicatePutMBps),
      readMBps: median((each) => each.readMBps),
      groupReadMBps: median((each) => each.groupReadMBps),
      referenceReadMBps: median((each) => each.referenceReadMBps),
      diskBytesPerUniqueByte: median((each) => each.diskBytesPerUniqueByte),
    }
  } finally {
    await rm(directory, { recursive: true, force: true })
  }
}

async function measureRound(
  directory: string,
  data: Buffer,
  chunks: readonly HashedChunk[],
  round: number,
): Promise<ChunkStoreBenchFigures> {
  await mkdir(directory)
  const referencePath = join(directory, 'reference')
  const referenceWriteMs = await timeMs(() => writeAndSync(referencePath, data))
  const storeDirectory = join(directory, 'store')
  const writeInto = async (
    path: string,
    put: (store: ChunkStore, chunk: HashedChunk) => Promise<boolean>,
  ): Promise<number> => {
    const store = await ChunkStore.open(path)
    try {
      return await timeMs(async () => {
        await inWindows(chunks, (chunk) => put(store, chunk))
        await store.flush()
      })
    } finally {
      await store.close()
    }
  }
  // put() and putHashed() one right after the other, first one then the other, so that
  // the shared machine's moods weigh on both alike.
  const verifying = (): Promise<number> =>
    writeInto(storeDirectory, (store, chunk) => store.put(chunk.hash, chunk.bytes))
  const trusting = (): Promise<number> =>
    writeInto(join(directory, 'store-hashed'), (store, chunk) => store.putHashed(chunk))
  let writeMs: number
  let hashedWriteMs: number
  if (round % 2 === 0) {
    writeMs = await verifying()
    hashedWriteMs = await trusting()
  } else {
    hashedWriteMs = await trusting()
    writeMs = await verifying()
  }
  const store = await ChunkStore.open(storeDirectory)
  const duplicatePutMs = await timeMs(() =>
    inWindows(chunks, (chunk) => store.put(chunk.hash, chunk.bytes)),
  )
  await store.close()

  const referenceReadMs = await timeMs(async () => void (await readFile(referencePath)))
  const reopened = await ChunkStore.open(storeDirectory)
  let bytesRead = 0
  const readMs = await timeMs(() =>
    inWindows(chunks, async (chunk) => {
      const bytes = await reopened.get(chunk.hash)
      bytesRead += bytes.length
    }),
  )
  let groupBytesRead = 0
  const groupReadMs = await timeMs(async () => {
    for (let first = 0; first < chunks.length; first += READ_GROUP_CHUNKS) {
      const group = chunks.slice(first, first + READ_GROUP_CHUNKS)
      for (const bytes of await reopened.getMany(group.map((chunk) => chunk.hash))) {
        if (!(bytes instanceof Uint8Array)) throw bytes
        groupBytesRead += bytes.length
      }
    }
  })
  await reopened.close()
  if (bytesRead !== data.length) throw new Error(`read ${bytesRead} of ${data.length} bytes`)
  if (groupBytesRead !== data.length)
    throw new Error(`read ${groupBytesRead} of ${data.length} bytes in groups`)

  const rate = (ms: number): number => data.length / MEGABYTE / (ms / 1000)
  const diskBytes = await directoryBytes(storeDirectory)
  await rm(directory, { recursive: true })
  return {
    rounds: 1,
    uniqueBytes: data.length,
    chunks: chunks.length,
    writeMBps: rate(writeMs),
    hashedWriteMBps: rate(hashedWriteMs),
    referenceWriteMBps: rate(referenceWriteMs),
    duplicatePutMBps: rate(duplicatePutMs),
    readMBps: rate(readMs),
    groupReadMBps: rate(groupReadMs),
    referenceReadMBps: rate(referenceReadMs),
    diskBytesPerUniqueByte: diskBytes / data.length,
  }
}

/** Times `body`, after `sync` has written out what earlier steps left, so none is charged to it. */
async function timeMs(body: () => Promise<void>): Promise<number> {
  execFileSync('sync')
  const startedMs = performance.now()
  await body()
  return performance.now() - startedMs
}

async function inWindows(
  chunks: readonly HashedChunk[],
  each: (chunk: HashedChunk) => Promise<unknown>,
) {
  for (let first = 0; first < chunks.length; first += OPERATIONS_IN_FLIGHT_MAX) {
    await Promise.all(chunks.slice(first, first + OPERATIONS_IN_FLIGHT_MAX).map(each))
  }
}

async function writeAndSync(path: string, data: Buffer): Promise<void> {
  const handle = await open(path, 'w')
  try {
    await handle.writeFile(data)
    await handle.datasync()
  } finally {
    await handle.close()
  }
}

async function directoryBytes(directory: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  }
  return total
}

function report(figures: ChunkStoreBenchFigures): string {
  const mebibytes = figures.uniqueBytes / (1024 * 1024)
  const meanKiB = figures.uniqueBytes / figures.chunks / 1024
  const row = (name: string, value: number, referenceName: string, reference: number) =>
    `${name.padEnd(24)} ${value.toFixed(0).padStart(6)} MB/s   ` +
    `${referenceName.padEnd(24)} ${reference.toFixed(0).padStart(6)} MB/s   ` +
    `ratio ${(value / reference).toFixed(2)}`
  return [
    `chunk store: ${mebibytes} MiB of random data, ${figures.chunks} chunks (mean ${meanKiB.toFixed(0)} KiB), medians of ${figures.rounds} rounds`,
    row('put + flush', figures.writeMBps, 'writeFile + fsync', figures.referenceWriteMBps),
    row(
      'putHashed + flush',
      figures.hashedWriteMBps,
      'writeFile + fsync',
      figures.referenceWriteMBps,
    ),
    row('verified get', figures.readMBps, 'readFile', figures.referenceReadMBps),
    row('verified getMany', figures.groupReadMBps, 'readFile', figures.referenceReadMBps),
    row(
      'put of stored chunks',
      figures.duplicatePutMBps,
      'writeFile + fsync',
      figures.referenceWriteMBps,
    ),
    `disk bytes per unique byte: ${figures.diskBytesPerUniqueByte.toFixed(4)} (goal < 1.1)`,
  ].join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // `--json` prints the figures as one JSON line, for bench:storage.
  const json = process.argv[2] === '--json'
  const mebibytes = json ? 256 : Number(process.argv[2] ?? 256)
  const figures = await runChunkStoreBench({ totalBytes: mebibytes * 1024 * 1024 })
  console.log(json ? JSON.stringify(figures) : report(figures))
}
