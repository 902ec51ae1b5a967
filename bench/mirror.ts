// `node --import tsx bench/mirror.ts`: how fast a live mirror applies what a dataset
// recorded, with no network in the way, beside `cp -r` + `sync` of the same files in the
// same run: 1,000 new 4 KiB files in one directory (a burst), a tree of 5,000 files of
// 1-64 KiB in 500 directories (BENCH_SCALE=0.1: 500), a new 256 MiB file (0.1: 100 MiB) and
// a 4 KiB overwrite in its middle. Everything the
// mirror writes is synced before it reports the batch applied, as `sync` makes `cp` durable.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Mirror } from '../storage/mirror.ts'
import { NodeStore } from '../storage/node-store.ts'

const SCALE = Number(process.env['BENCH_SCALE'] ?? 1)
const MiB = 1024 * 1024
const BURST_FILES = 1000
const BURST_FILE_BYTES = 4096
const TREE_FILES = Math.round(5000 * SCALE)
const LARGE_FILE_BYTES = Math.round(256 * MiB * Math.min(1, SCALE * 4))
const EDIT_BYTES = 4096

async function timedMs(work: () => unknown): Promise<number> {
  const startedMs = performance.now()
  await work()
  return performance.now() - startedMs
}

/** `cp -r` of `source` into a fresh `destination`, then `sync`: the durable reference. */
async function copyAndSyncMs(source: string, destination: string): Promise<number> {
  execFileSync('sync')
  const ms = await timedMs(() => {
    execFileSync('cp', ['-r', source, destination])
    execFileSync('sync')
  })
  await rm(destination, { recursive: true, force: true })
  return ms
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'clusterreplica-bench-mirror-'))
  const store = await NodeStore.open(join(root, 'data'))
  try {
    const dataset = await store.ownDataset('bench')
    const tree = join(root, 'tree')
    const mirror = await Mirror.open({
      reader: dataset.reader,
      log: dataset.log,
      directory: join(root, 'mirror'),
      chunkStore: store.chunkStore,
    })
    const report = (what: string, ms: number, referenceMs: number): void =>
      console.log(
        `${what}: ${ms.toFixed(0)} ms | cp -r + sync ${referenceMs.toFixed(0)} ms, ratio ${(referenceMs / ms).toFixed(2)}`,
      )

    await mkdir(join(tree, 'burst'), { recursive: true })
    for (let index = 0; index < BURST_FILES; index++)
      await writeFile(join(tree, 'burst', `burst-${index}.dat`), randomBytes(BURST_FILE_BYTES))
    await dataset.scan(tree)
    execFileSync('sync')
    const burstMs = await timedMs(() => mirror.applyTo())
    report(
      `mirror applies ${BURST_FILES} new ${BURST_FILE_BYTES / 1024} KiB files`,
      burstMs,
      await copyAndSyncMs(join(tree, 'burst'), join(root, 'copy')),
    )

    for (let index = 0; index < TREE_FILES; index++) {
      const directory = join(
        tree,
        'tree',
        `level-${index % 10}`,
        `sub-${Math.floor(index / 10) % 10}`,
        `leaf-${Math.floor(index / 100) % 5}`,
      )
      await mkdir(directory, { recursive: true })
      await writeFile(
        join(directory, `small-${index}.dat`),
        randomBytes(1024 + Math.floor(Math.random() * 63 * 1024)),
      )
    }
    await dataset.scan(tree)
    execFileSync('sync')
    const treeMs = await timedMs(() => mirror.applyTo())
    report(
      `mirror applies a tree of ${TREE_FILES} new files of 1-64 KiB`,
      treeMs,
      await copyAndSyncMs(join(tree, 'tree'), join(root, 'copy')),
    )

    const large = join(tree, 'large.dat')
    const file = await open(large, 'w')
    for (let written = 0; written < LARGE_FILE_BYTES; written += 8 * MiB)
      await file.write(randomBytes(Math.min(8 * MiB, LARGE_FILE_BYTES - written)))
    await file.close()
    await dataset.scan(tree)
    execFileSync('sync')
    const largeMs = await timedMs(() => mirror.applyTo())
    report(
      `mirror applies a new ${(LARGE_FILE_BYTES / MiB).toFixed(0)} MiB file`,
      largeMs,
      await copyAndSyncMs(large, join(root, 'copy')),
    )

    const edited = await open(large, 'r+')
    await edited.write(randomBytes(EDIT_BYTES), 0, EDIT_BYTES, Math.floor(LARGE_FILE_BYTES / 2))
    await edited.close()
    await dataset.scan(tree)
    execFileSync('sync')
    const editMs = await timedMs(() => mirror.applyTo())
    report(
      `mirror applies a ${EDIT_BYTES / 1024} KiB overwrite in that file`,
      editMs,
      await copyAndSyncMs(large, join(root, 'copy')),
    )
  } finally {
    await store.close()
    await rm(root, { recursive: true, force: true })
  }
}

await main()
