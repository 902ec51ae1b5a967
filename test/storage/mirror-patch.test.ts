// Patching big mirrored files (storage/mirror-patch.ts): only the chunks that changed are
// read and written, into a copy renamed over the file; anything that is not exactly the
// previous version is rewritten whole; a crash during a patch (simulated, and a real
// kill -9) never leaves a torn file in the mirror, and applying again makes it equal.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import { Mirror } from '../../storage/mirror.ts'
import { changedChunks } from '../../storage/mirror-patch.ts'
import { isTemporaryName, temporaryName } from '../../storage/restore.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import type { DatasetPath } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import {
  PAST_MTIME_MS,
  contentBytes,
  sha256,
  snapshotTree,
  writeDatasetFile,
} from './fixtures/dataset-tree.ts'

const MiB = 1024 * 1024
const BIG_BYTES = 3 * MiB
const CHILD_SCRIPT = fileURLToPath(new URL('./fixtures/mirror-child.ts', import.meta.url))
const KILLS = 4

const chunk = (name: string, lengthBytes: number): { hash: ChunkHash; lengthBytes: number } => ({
  hash: sha256(name) as ChunkHash,
  lengthBytes,
})

interface Setup {
  readonly directory: string
  readonly root: string
  readonly store: NodeStore
  readonly dataset: Dataset
  readonly mirror: Mirror
  /** Chunks read by patches (a whole rewrite reads through the dataset's reader instead). */
  readonly patchReads: () => number
}

/** A dataset with a big file and a small one, scanned and mirrored by a mirror that may patch. */
async function withMirror(body: (setup: Setup) => Promise<void>): Promise<void> {
  await withTempDir(async (directory) => {
    const root = join(directory, 'set')
    await writeDatasetFile(root, 'big.bin', contentBytes('big', BIG_BYTES))
    await writeDatasetFile(root, 'small.txt', 'small\n')
    const store = await NodeStore.open(join(directory, 'data'))
    try {
      const dataset = await store.ownDataset('dataset')
      await dataset.scan(root)
      let reads = 0
      const counting = {
        get: (hash: ChunkHash) => {
          reads++
          return store.chunkStore.get(hash)
        },
      }
      const mirror = await Mirror.open({
        reader: dataset.reader,
        log: dataset.log,
        directory: join(directory, 'mirror'),
        chunkStore: counting,
      })
      await mirror.applyTo()
      reads = 0
      await body({ directory, root, store, dataset, mirror, patchReads: () => reads })
    } finally {
      await store.close()
    }
  })
}

function openMirror(store: NodeStore, dataset: Dataset, directory: string): Promise<Mirror> {
  const { reader, log } = dataset
  return Mirror.open({ reader, log, directory, chunkStore: store.chunkStore })
}

/** The big file with `edits` pieces of 4 KiB replaced, spread over it, at a new mtime. */
async function editBigFile(root: string, edits: number, mtimeMs: number): Promise<void> {
  const bytes = await readFile(join(root, 'big.bin'))
  for (let edit = 0; edit < edits; edit++) {
    const offset = Math.floor(((edit + 0.5) * bytes.length) / edits)
    contentBytes(`edit ${mtimeMs} ${edit}`, 4096).copy(bytes, offset)
  }
  await writeDatasetFile(root, 'big.bin', bytes, { mtimeMs })
}

async function inode(path: string): Promise<number> {
  return (await stat(path)).ino
}

test('changedChunks: the chunks of the next list that the previous one does not hold at the same offset', () => {
  const previous = [chunk('a', 10), chunk('b', 20), chunk('c', 30)]
  assert.equal(changedChunks(previous, previous), [])
  // One chunk replaced in the middle, the same length.
  assert.equal(changedChunks(previous, [chunk('a', 10), chunk('x', 20), chunk('c', 30)]), [
    { offset: 10, chunk: chunk('x', 20) },
  ])
  // A longer chunk in the middle shifts what follows: the same hash at another offset is written.
  assert.equal(changedChunks(previous, [chunk('a', 10), chunk('y', 25), chunk('c', 30)]), [
    { offset: 10, chunk: chunk('y', 25) },
    { offset: 35, chunk: chunk('c', 30) },
  ])
  // Cut short, and grown: only the new tail is written.
  assert.equal(changedChunks(previous, [chunk('a', 10)]), [])
  assert.equal(changedChunks(previous, [...previous, chunk('d', 5)]), [
    { offset: 60, chunk: chunk('d', 5) },
  ])
})

test('a small edit in a big file is patched: only its changed chunks are read, into a copy renamed over it', () =>
  withMirror(async ({ root, dataset, mirror, patchReads }) => {
    const path = join(mirror.directory, 'big.bin')
    const before = await inode(path)
    await editBigFile(root, 2, PAST_MTIME_MS + 1000)
    await writeDatasetFile(root, 'big.bin', await readFile(join(root, 'big.bin')), {
      mode: 0o600,
      mtimeMs: PAST_MTIME_MS + 1000,
    })
    await dataset.scan(root)
    await mirror.applyTo()
    assert.ok(patchReads() >= 1 && patchReads() <= 4, `patched: ${patchReads()} chunk(s) read`)
    assert.is.not(await inode(path), before, 'replaced by a rename, never changed in place')
    assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))

    // Grown at the end: only the tail is new.
    const readsBefore = patchReads()
    const grown = Buffer.concat([await readFile(join(root, 'big.bin')), contentBytes('tail', 5000)])
    await writeDatasetFile(root, 'big.bin', grown, { mtimeMs: PAST_MTIME_MS + 2000 })
    await dataset.scan(root)
    await mirror.applyTo()
    assert.is(patchReads() - readsBefore, 1, 'only the new tail was read')
    assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))
  }))

test('rewritten whole instead: a mirror copy that is not the previous version, an edit that kept the mtime, or much changed', () =>
  withMirror(async ({ root, dataset, mirror, patchReads }) => {
    const path = join(mirror.directory, 'big.bin')

    // Someone changed the mirror's copy: its size no longer matches the version it held.
    await writeFile(path, contentBytes('stranger', BIG_BYTES + 1))
    await editBigFile(root, 1, PAST_MTIME_MS + 1000)
    await dataset.scan(root)
    await mirror.applyTo()
    assert.is(patchReads(), 0, 'rewritten whole')
    assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))

    // Grown, with the mtime kept: a patch interrupted by a crash could not be told from it.
    const grown = Buffer.concat([await readFile(join(root, 'big.bin')), Buffer.from('more')])
    await writeDatasetFile(root, 'big.bin', grown, { mtimeMs: PAST_MTIME_MS + 1000 })
    await dataset.scan(root)
    await mirror.applyTo()
    assert.is(patchReads(), 0, 'rewritten whole')
    assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))

    // Half the file changed.
    await editBigFile(root, 40, PAST_MTIME_MS + 2000)
    await dataset.scan(root)
    await mirror.applyTo()
    assert.is(patchReads(), 0, 'rewritten whole')
    assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))
  }))

test('a crash during a patch leaves the old version in place and a temporary copy, which the next apply removes', () =>
  withMirror(async ({ directory, root, store, dataset, mirror }) => {
    const path = join(mirror.directory, 'big.bin')
    const old = await readFile(path)
    await editBigFile(root, 1, PAST_MTIME_MS + 1000)
    await dataset.scan(root)
    // What a crash mid-patch leaves: the visible file untouched, a half-written copy beside it.
    await writeFile(join(mirror.directory, temporaryName()), old.subarray(0, old.length / 2))
    const reopened = await openMirror(store, dataset, join(directory, 'mirror'))
    assert.equal(await readFile(path), old, 'the old version is still whole')
    await reopened.applyTo()
    assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))
    assert.equal(
      (await readdir(mirror.directory)).filter(isTemporaryName),
      [],
      'no temporary copy is left',
    )
  }))

/** Runs the mirror child and kills it (SIGKILL) `delayMs` after it starts applying: true if it had not finished. */
async function applyAndKill(data: string, mirror: string, delayMs: number): Promise<boolean> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD_SCRIPT, data, mirror], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let output = ''
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()))
  const applying = new Promise<void>((resolve) => {
    child.stdout.on('data', (data: Buffer) => {
      output += data.toString()
      if (output.includes('"applying"')) resolve()
    })
    void exited.then(resolve)
  })
  await applying
  const waiting = new AbortController()
  await Promise.race([
    sleep(delayMs, undefined, { signal: waiting.signal }).catch(() => {}),
    exited,
  ])
  waiting.abort()
  child.kill('SIGKILL')
  await exited
  return !output.includes('"done"')
}

test('kill -9 while patching: every mirrored file holds a whole version; applying again makes the mirror equal', () =>
  withTempDir(async (directory) => {
    const root = join(directory, 'set')
    const data = join(directory, 'data')
    const mirrorDirectory = join(directory, 'mirror')
    const names = Array.from({ length: 8 }, (_, index) => `big-${index}.bin`)
    for (const name of names) await writeDatasetFile(root, name, contentBytes(name, 2 * MiB))
    const scan = async (): Promise<void> => {
      const store = await NodeStore.open(data)
      try {
        await (await store.ownDataset('dataset')).scan(root)
      } finally {
        await store.close()
      }
    }
    await scan()
    assert.not.ok(await applyAndKill(data, mirrorDirectory, 60_000), 'the first mirror completes')
    let interrupted = 0
    let tornSeen = 0
    for (let round = 1; round <= KILLS; round++) {
      for (const name of names) {
        const bytes = await readFile(join(root, name))
        contentBytes(`${name} ${round}`, 4096).copy(bytes, (round * 300_000) % (2 * MiB - 4096))
        await writeDatasetFile(root, name, bytes, { mtimeMs: PAST_MTIME_MS + round * 1000 })
      }
      await scan()
      if (await applyAndKill(data, mirrorDirectory, (round * 7) % 30)) interrupted++
      const store = await NodeStore.open(data)
      try {
        const dataset = await store.ownDataset('dataset')
        const mirror = await openMirror(store, dataset, mirrorDirectory)
        for (const name of names) {
          const hash = sha256(await readFile(join(mirrorDirectory, name)))
          const versions = await dataset.reader.versions(name as DatasetPath)
          if (!versions.some((version) => version.kind === 'file' && version.fileHash === hash))
            tornSeen++
        }
        await mirror.applyTo()
        assert.equal(await snapshotTree(mirrorDirectory), await snapshotTree(root))
      } finally {
        await store.close()
      }
    }
    assert.is(tornSeen, 0, 'no torn file was ever visible in the mirror')
    assert.ok(interrupted > 0, 'a kill landed while the child was applying')
  }))

test.run()
