// `npm run bench:storage`: the versioned store's speed and size (issue 3). It makes its own
// data in a temporary directory (removed afterwards) and prints each figure beside the
// same machine's `cp` of the same data in the same run, and `cp` followed by `sync` (the
// store makes what it writes durable; `cp` alone leaves it in the page cache), as ratios:
// - ingest of a new 256 MiB file and of a tree of 5,000 small files;
// - re-ingest after a 4 KiB edit in the middle of the big file: bytes appended, time;
// - restore of the big file and of the tree;
// - disk used by the store per MiB of unique data, and peak memory (VmHWM) while ingesting
//   the big file, in a process of its own (bench/storage-ingest-child.ts);
// - the chunk store on its own: write and verified read (bench/chunk-store.ts, in a
//   process of its own).
// Before every timed step, earlier writes are flushed with `sync`, so none is charged to it.
// Our big-file ingest and both restores are, like each `cp`, the median of ROUNDS runs:
// one run on these shared machines swings by a factor of two. The tree's ingest runs once
// (a second ingest of the same tree into the store would find every chunk stored).
import { execFileSync, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CHUNK_SIZE_MAX_BYTES } from '../storage/chunk-types.ts'
import { NodeStore } from '../storage/node-store.ts'
import type { ChunkStoreBenchFigures } from './chunk-store.ts'

const MEBIBYTE = 1024 * 1024
const MEGABYTE = 1_000_000
const BIG_FILE_BYTES = 256 * MEBIBYTE
const GENERATE_PIECE_BYTES = 4 * MEBIBYTE
const TREE_FILES = 5000
const TREE_DIRECTORIES = 100
const TREE_FILE_BYTES_MIN = 512
const TREE_FILE_BYTES_MAX = 16 * 1024
const EDIT_BYTES = 4096
const EDIT_APPENDED_BYTES_GOAL = 2 * CHUNK_SIZE_MAX_BYTES
const DISK_PER_UNIQUE_GOAL = 1.1
const PEAK_MEMORY_BYTES_GOAL = 200 * MEGABYTE
const CHUNK_STORE_MBPS_GOAL = 300
const SPEED_RATIO_GOAL = 0.5
const ROUNDS = 3
const INGEST_CHILD = fileURLToPath(new URL('./storage-ingest-child.ts', import.meta.url))
const CHUNK_STORE_BENCH = fileURLToPath(new URL('./chunk-store.ts', import.meta.url))

interface Reference {
  readonly cpMs: number
  readonly cpSyncMs: number
}

interface IngestChildFigures {
  readonly ingestMs: number
  readonly bytesRead: number
  readonly rssBeforeBytes: number
  readonly rssSampledMaxBytes: number
  readonly highWaterMarkBytes: number
}

const lines: string[] = []
const print = (line: string): void => {
  lines.push(line)
  console.log(line)
}

function flushPageCache(): void {
  execFileSync('sync')
}

async function timedMs(work: () => Promise<unknown>): Promise<number> {
  flushPageCache()
  const startedMs = performance.now()
  await work()
  return performance.now() - startedMs
}

function median(figures: readonly number[]): number {
  return [...figures].sort((a, b) => a - b)[Math.floor(figures.length / 2)]!
}

/** The median time of ROUNDS runs of `work`, each after `check` (of the round before, if any) and `clear`, untimed. */
async function medianMs(
  work: () => Promise<unknown>,
  check: () => Promise<void>,
  clear: () => Promise<void>,
): Promise<number> {
  const rounds: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0) await check()
    await clear()
    rounds.push(await timedMs(work))
  }
  await check()
  return median(rounds)
}

/**
 * `cp -r source destination`, timed alone and with the `sync` that makes it durable: the
 * median of ROUNDS copies.
 */
async function referenceCopy(source: string, destination: string): Promise<Reference> {
  const rounds: Reference[] = []
  for (let round = 0; round < ROUNDS; round++) {
    await rm(destination, { recursive: true, force: true })
    flushPageCache()
    const startedMs = performance.now()
    execFileSync('cp', ['-r', source, destination])
    const cpMs = performance.now() - startedMs
    execFileSync('sync')
    rounds.push({ cpMs, cpSyncMs: performance.now() - startedMs })
  }
  await rm(destination, { recursive: true })
  return {
    cpMs: median(rounds.map((each) => each.cpMs)),
    cpSyncMs: median(rounds.map((each) => each.cpSyncMs)),
  }
}

async function writeBigFile(path: string): Promise<void> {
  const handle = await open(path, 'w')
  try {
    for (let written = 0; written < BIG_FILE_BYTES; written += GENERATE_PIECE_BYTES)
      await handle.write(randomBytes(GENERATE_PIECE_BYTES))
  } finally {
    await handle.close()
  }
}

/** TREE_FILES files of random bytes in TREE_DIRECTORIES directories; returns their total size. */
async function writeTree(root: string): Promise<number> {
  let totalBytes = 0
  for (let number = 0; number < TREE_FILES; number++) {
    const directory = join(root, `d${number % TREE_DIRECTORIES}`)
    if (number < TREE_DIRECTORIES) await mkdir(directory, { recursive: true })
    const span = TREE_FILE_BYTES_MAX - TREE_FILE_BYTES_MIN
    const sizeBytes = TREE_FILE_BYTES_MIN + ((number * 7919) % span)
    await writeFile(join(directory, `f${number}.bin`), randomBytes(sizeBytes))
    totalBytes += sizeBytes
  }
  return totalBytes
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const piece of createReadStream(path)) hash.update(piece as Buffer)
  return hash.digest('hex')
}

async function assertSameTree(expected: string, actual: string): Promise<void> {
  const names = (await readdir(expected, { recursive: true })).sort()
  const restored = (await readdir(actual, { recursive: true })).sort()
  if (names.join('\n') !== restored.join('\n')) throw new Error(`${actual} lists other entries`)
  for (const name of names) {
    if ((await stat(join(expected, name))).isDirectory()) continue
    const [left, right] = await Promise.all([
      readFile(join(expected, name)),
      readFile(join(actual, name)),
    ])
    if (!left.equals(right)) throw new Error(`${name} was not restored byte-exact`)
  }
}

/** Bytes the files under `directory` occupy on disk (allocated blocks, as du counts). */
async function diskBytes(directory: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true }))
    total += (await stat(join(entry.parentPath, entry.name))).blocks * 512
  return total
}

/** Runs a program of its own (its memory and its threads are its alone) and parses the JSON it prints. */
function runChild<T>(program: string, args: readonly string[]): Promise<T> {
  flushPageCache()
  const child = spawn(process.execPath, ['--import', 'tsx', program, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let output = ''
  child.stdout.on('data', (bytes: Buffer) => (output += bytes.toString()))
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      if (code === 0) resolve(JSON.parse(output) as T)
      else reject(new Error(`${program} exited with ${code}`))
    }),
  )
}

function runIngestChild(data: string, id: string, directory: string): Promise<IngestChildFigures> {
  return runChild(INGEST_CHILD, [data, id, directory])
}

const megabytesPerSecond = (bytes: number, ms: number): number => bytes / MEGABYTE / (ms / 1000)
const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
const goal = (met: boolean): string => (met ? 'goal met' : 'GOAL MISSED')

/** One speed row: ours, then cp and cp + sync of the same bytes, each with our ratio to it. */
function speedRow(what: string, bytes: number, ms: number, reference: Reference): void {
  const ours = megabytesPerSecond(bytes, ms)
  const cp = megabytesPerSecond(bytes, reference.cpMs)
  const cpSync = megabytesPerSecond(bytes, reference.cpSyncMs)
  print(
    `${what.padEnd(30)} ${ours.toFixed(0).padStart(5)} MB/s ${seconds(ms).padStart(8)}` +
      ` | cp ${cp.toFixed(0).padStart(5)} MB/s ratio ${(ours / cp).toFixed(2)}` +
      ` | cp+sync ${cpSync.toFixed(0).padStart(5)} MB/s ratio ${(ours / cpSync).toFixed(2)}` +
      ` | ${goal(ours / cp >= SPEED_RATIO_GOAL)} (≥ ${SPEED_RATIO_GOAL} of cp)`,
  )
}

function filesRow(what: string, ms: number, reference: Reference): void {
  const perSecond = (each: number): number => TREE_FILES / (each / 1000)
  print(
    `${what.padEnd(30)} ${perSecond(ms).toFixed(0).padStart(5)} files/s` +
      ` | cp ${perSecond(reference.cpMs).toFixed(0)} files/s ratio ${(reference.cpMs / ms).toFixed(2)}` +
      ` | cp+sync ${perSecond(reference.cpSyncMs).toFixed(0)} files/s ratio ${(reference.cpSyncMs / ms).toFixed(2)}`,
  )
}

async function main(directory: string): Promise<void> {
  const source = join(directory, 'source')
  const big = join(source, 'big')
  const tree = join(source, 'tree')
  const copies = join(directory, 'copies')
  const data = join(directory, 'data')
  await mkdir(big, { recursive: true })
  await mkdir(copies)
  await writeBigFile(join(big, 'big.bin'))
  const treeBytes = await writeTree(tree)
  print(
    `storage bench: a ${BIG_FILE_BYTES / MEBIBYTE} MiB file, and ${TREE_FILES} files of ` +
      `${TREE_FILE_BYTES_MIN}-${TREE_FILE_BYTES_MAX} bytes (${(treeBytes / MEBIBYTE).toFixed(1)} MiB) in ${TREE_DIRECTORIES} directories`,
  )

  const bigCopy = await referenceCopy(join(big, 'big.bin'), join(copies, 'big.bin'))
  // Each round into a new store; the first round's store is kept for what follows.
  const ingests: IngestChildFigures[] = []
  for (let round = 0; round < ROUNDS; round++) {
    const roundData = round === 0 ? data : join(directory, `data-${round}`)
    ingests.push(await runIngestChild(roundData, 'big', big))
    if (round > 0) await rm(roundData, { recursive: true })
  }
  if (ingests.some((each) => each.bytesRead !== BIG_FILE_BYTES))
    throw new Error('the big file was not read whole')
  const ingestMs = median(ingests.map((each) => each.ingestMs))
  speedRow('ingest of a new 256 MiB file', BIG_FILE_BYTES, ingestMs, bigCopy)
  const ingested = ingests.reduce((most, each) =>
    each.highWaterMarkBytes > most.highWaterMarkBytes ? each : most,
  )

  const store = await NodeStore.open(data)
  try {
    const bigDataset = await store.ownDataset('big')
    const treeDataset = await store.ownDataset('tree')
    const treeCopy = await referenceCopy(tree, join(copies, 'tree'))
    const treeIngestMs = await timedMs(() => treeDataset.scan(tree))
    speedRow('ingest of the tree', treeBytes, treeIngestMs, treeCopy)
    filesRow('', treeIngestMs, treeCopy)

    const handle = await open(join(big, 'big.bin'), 'r+')
    await handle.write(randomBytes(EDIT_BYTES), 0, EDIT_BYTES, BIG_FILE_BYTES / 2)
    await handle.close()
    const packBytesBefore = (await store.chunkStore.stats()).packBytes
    const diskBefore = await diskBytes(data)
    const editCopy = await referenceCopy(join(big, 'big.bin'), join(copies, 'big-edited.bin'))
    const editMs = await timedMs(() => bigDataset.scan(big))
    const appendedBytes = (await store.chunkStore.stats()).packBytes - packBytesBefore
    const grownBytes = (await diskBytes(data)) - diskBefore
    print(
      `${'re-ingest after a 4 KiB edit'.padEnd(30)} ${seconds(editMs).padStart(8)}, ` +
        `${appendedBytes} bytes appended to packs (${goal(appendedBytes <= EDIT_APPENDED_BYTES_GOAL)}: ` +
        `≤ 2 × ${CHUNK_SIZE_MAX_BYTES}), store grew ${grownBytes} bytes on disk` +
        ` | cp of the file ${seconds(editCopy.cpMs)} ratio ${(editCopy.cpMs / editMs).toFixed(2)}` +
        ` | cp+sync ${seconds(editCopy.cpSyncMs)} ratio ${(editCopy.cpSyncMs / editMs).toFixed(2)}`,
    )

    // Each round into a new destination; each is checked, then removed.
    const restoredBig = join(directory, 'restored-big')
    const bigHash = await sha256OfFile(join(big, 'big.bin'))
    const bigRestoreCopy = await referenceCopy(join(big, 'big.bin'), join(copies, 'big-again.bin'))
    const bigRestoreMs = await medianMs(
      () =>
        bigDataset.restore({ point: { length: bigDataset.log.length }, destination: restoredBig }),
      async () => {
        if ((await sha256OfFile(join(restoredBig, 'big.bin'))) !== bigHash)
          throw new Error('the big file was not restored byte-exact')
      },
      () => rm(restoredBig, { recursive: true, force: true }),
    )
    speedRow('restore of the 256 MiB file', BIG_FILE_BYTES, bigRestoreMs, bigRestoreCopy)

    const restoredTree = join(directory, 'restored-tree')
    const treeRestoreCopy = await referenceCopy(tree, join(copies, 'tree-again'))
    const treeRestoreMs = await medianMs(
      () =>
        treeDataset.restore({
          point: { length: treeDataset.log.length },
          destination: restoredTree,
        }),
      () => assertSameTree(tree, restoredTree),
      () => rm(restoredTree, { recursive: true, force: true }),
    )
    speedRow('restore of the tree', treeBytes, treeRestoreMs, treeRestoreCopy)
    filesRow('', treeRestoreMs, treeRestoreCopy)

    const uniqueBytes = (await store.chunkStore.stats()).liveBytes
    await store.close()
    const storeDisk = await diskBytes(data)
    const perUnique = storeDisk / uniqueBytes
    const parts = await Promise.all(
      ['chunks', 'index', 'cores'].map(
        async (part) =>
          `${part} ${((await diskBytes(join(data, part))) / MEBIBYTE).toFixed(1)} MiB`,
      ),
    )
    print(
      `disk used per MiB of unique data: ${perUnique.toFixed(3)} (${(storeDisk / MEBIBYTE).toFixed(1)} MiB for ` +
        `${(uniqueBytes / MEBIBYTE).toFixed(1)} MiB: ${parts.join(', ')}) | ${goal(perUnique < DISK_PER_UNIQUE_GOAL)} (< ${DISK_PER_UNIQUE_GOAL})`,
    )
  } finally {
    await store.close()
  }
  const megabytes = (bytes: number): string => `${(bytes / MEGABYTE).toFixed(0)} MB`
  print(
    `peak memory ingesting the 256 MiB file: VmHWM ${megabytes(ingested.highWaterMarkBytes)} ` +
      `(RSS sampled every 5 ms: max ${megabytes(ingested.rssSampledMaxBytes)}, ` +
      `${megabytes(ingested.rssBeforeBytes)} before the scan) | ` +
      `${goal(ingested.highWaterMarkBytes < PEAK_MEMORY_BYTES_GOAL)} (< ${megabytes(PEAK_MEMORY_BYTES_GOAL)})`,
  )

  // In a process of its own: run here, after the steps above, putHashed measured slower
  // than put, and on its own (as every other time) nearly twice as fast.
  const chunkStore = await runChild<ChunkStoreBenchFigures>(CHUNK_STORE_BENCH, ['--json'])
  const chunkRow = (what: string, ours: number, referenceName: string, reference: number): void =>
    print(
      `${what.padEnd(30)} ${ours.toFixed(0).padStart(5)} MB/s | ${referenceName} ${reference.toFixed(0)} MB/s ` +
        `ratio ${(ours / reference).toFixed(2)} | ${goal(ours >= CHUNK_STORE_MBPS_GOAL)} (≥ ${CHUNK_STORE_MBPS_GOAL} MB/s)`,
    )
  const writeReference = ['writeFile + fsync', chunkStore.referenceWriteMBps] as const
  const readReference = ['readFile', chunkStore.referenceReadMBps] as const
  chunkRow('chunk store put + flush', chunkStore.writeMBps, ...writeReference)
  chunkRow('  putHashed + flush (ingest)', chunkStore.hashedWriteMBps, ...writeReference)
  chunkRow('chunk store verified get', chunkStore.readMBps, ...readReference)
  chunkRow('  verified getMany (restore)', chunkStore.groupReadMBps, ...readReference)
}

const directory = await mkdtemp(join(tmpdir(), 'storage-bench-'))
try {
  await main(directory)
} finally {
  await rm(directory, { recursive: true, force: true })
}
