import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Mirror } from '../../storage/mirror.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { TEMP_FILE_PREFIX } from '../../storage/restore.ts'
import { makeTempDir, removeDir } from '../helpers/temp-dir.ts'
import { buildSampleDataset, changeSampleDataset, snapshotTree } from './fixtures/dataset-tree.ts'

interface Setup {
  readonly directory: string
  readonly root: string
  readonly store: NodeStore
  readonly dataset: Dataset
}

async function withSetup(body: (setup: Setup) => Promise<void>): Promise<void> {
  const directory = await makeTempDir('mirror-')
  const store = await NodeStore.open(join(directory, 'data'))
  try {
    const root = join(directory, 'set')
    await buildSampleDataset(root)
    const dataset = await store.ownDataset('dataset')
    await dataset.scan(root)
    await body({ directory, root, store, dataset })
  } finally {
    await store.close()
    await removeDir(directory)
  }
}

async function assertMirrors(mirror: Mirror, root: string): Promise<void> {
  assert.equal(await snapshotTree(mirror.directory), await snapshotTree(root))
}

/** Edits of every kind, then a scan. */
async function changeEverything(dataset: Dataset, root: string): Promise<void> {
  await changeSampleDataset(root)
  await dataset.scan(root)
}

test('a mirror of the own log equals the dataset after every kind of change, renames applied as moves', () =>
  withSetup(async ({ directory, root, dataset }) => {
    const mirror = await dataset.openMirror(join(directory, 'mirror'))
    assert.is(await mirror.applyTo(), dataset.log.length)
    await assertMirrors(mirror, root)
    const inodeBefore = (await stat(join(mirror.directory, 'docs/report.bin'))).ino

    await changeEverything(dataset, root)
    await mirror.applyTo()
    await assertMirrors(mirror, root)
    assert.is(
      (await stat(join(mirror.directory, 'archive/report.bin'))).ino,
      inodeBefore,
      'moved, not copied',
    )
    // The applied length lives beside the mirror, not in it.
    const state = JSON.parse(await readFile(mirror.statePath, 'utf8')) as { appliedLength: number }
    assert.is(state.appliedLength, dataset.log.length)
    assert.not.ok(mirror.statePath.startsWith(`${mirror.directory}/`))
  }))

test('reapplying is idempotent, and a mirror without state reconciles, removing what is not in the checkout', () =>
  withSetup(async ({ directory, root, dataset }) => {
    const first = await dataset.openMirror(join(directory, 'mirror'))
    await first.applyTo()
    await changeEverything(dataset, root)
    await first.applyTo()

    // Rewound to the start: every batch is applied again over a finished mirror.
    await writeFile(
      first.statePath,
      JSON.stringify({ formatVersion: 1, logKey: dataset.log.keyHex, appliedLength: 0 }),
    )
    const rewound = await dataset.openMirror(first.directory)
    assert.is(rewound.appliedLength, 0)
    await rewound.applyTo()
    await assertMirrors(rewound, root)

    // State lost, plus stray files and a crash's leftover temporary file in the mirror.
    await rm(first.statePath)
    await writeFile(join(first.directory, 'stray.txt'), 'not in the dataset')
    await writeFile(join(first.directory, 'archive', `${TEMP_FILE_PREFIX}0123456789abcdef`), 'half')
    await mkdir(join(first.directory, 'stray-dir/inner'), { recursive: true })
    const reconciled = await dataset.openMirror(first.directory)
    await reconciled.applyTo()
    await assertMirrors(reconciled, root)

    // A damaged state file is treated as lost, not trusted.
    await writeFile(first.statePath, '{"formatVersion":1,"appliedLen')
    const afterDamage = await dataset.openMirror(first.directory)
    assert.is(afterDamage.appliedLength, 0)
    await afterDamage.applyTo()
    await assertMirrors(afterDamage, root)
  }))

test('a mirror of a part of the history equals the checkout at that length', () =>
  withSetup(async ({ directory, root, dataset }) => {
    const lengthBefore = dataset.log.length
    const before = await snapshotTree(root)
    await changeEverything(dataset, root)
    const mirror = await dataset.openMirror(join(directory, 'mirror'))
    await mirror.applyTo(lengthBefore)
    assert.equal(await snapshotTree(mirror.directory), before)
    await mirror.applyTo()
    await assertMirrors(mirror, root)
  }))

test('a replica mirrors a log it receives by replication, live, once the chunks arrive', async () => {
  const directory = await makeTempDir('mirror-replica-')
  const master = await NodeStore.open(join(directory, 'master'))
  const replica = await NodeStore.open(join(directory, 'replica'))
  const following = new AbortController()
  try {
    const root = join(directory, 'set')
    await buildSampleDataset(root)
    const own = await master.ownDataset('dataset')
    await own.scan(root)
    const copyChunks = async (): Promise<void> => {
      // The chunk protocol's job later: here the real chunk stores, one chunk at a time.
      for await (const hash of master.referencedChunks())
        if (!(await replica.chunkStore.has(hash)))
          await replica.chunkStore.put(hash, await master.chunkStore.get(hash))
      await replica.chunkStore.flush()
    }
    await copyChunks()
    const masterSide = master.corestore.replicate(true)
    const replicaSide = replica.corestore.replicate(false)
    masterSide.pipe(replicaSide).pipe(masterSide)
    const copy = await replica.replicaDataset('dataset', own.log.core.key)
    await copy.log.waitForLength(own.log.length, AbortSignal.timeout(20_000))
    // What a replica's sync says once the chunks are here: only then is the copy indexed.
    await copy.markComplete(copy.log.length)
    await copy.refresh()
    const mirror = await copy.openMirror(join(directory, 'mirror'))
    await mirror.applyTo()
    await assertMirrors(mirror, root)

    // Live: the master changes, the log arrives first, the chunks later.
    const follow = mirror.follow(following.signal, { retryDelayMs: 50 })
    await changeEverything(own, root)
    await sleep(200)
    await copyChunks()
    await copy.log.waitForLength(own.log.length, AbortSignal.timeout(20_000))
    await copy.markComplete(own.log.length)
    for (let waitedMs = 0; mirror.appliedLength < own.log.length; waitedMs += 50) {
      assert.ok(waitedMs < 20_000, 'the mirror caught up in time')
      await sleep(50)
    }
    await assertMirrors(mirror, root)
    following.abort()
    await follow
    masterSide.destroy()
    replicaSide.destroy()
  } finally {
    following.abort()
    await replica.close()
    await master.close()
    await removeDir(directory)
  }
})

test.run()
