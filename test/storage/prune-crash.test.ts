// Real processes killed with SIGKILL in the middle of a node prune, several rounds, each
// at another moment. After every kill the store is reopened here: every version not
// marked pruned restores byte-exact, every marked one reads PRUNED, no version the policy
// keeps is marked, and the index agrees with the log. A last prune, left to finish, marks
// exactly what the policy drops.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import { chunkBytes } from '../../storage/chunker.ts'
import { NodeStore, type Dataset } from '../../storage/node-store.ts'
import { keptVersionsOfPath } from '../../storage/retention.ts'
import { retentionPolicy } from '../../storage/retention-policy.ts'
import type { DatasetPath, LogSeq } from '../../storage/version-record.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import {
  HISTORY_START_MS,
  HOUR_MS,
  PRUNE_CRASH_DATASET,
  PRUNE_CRASH_PACK_SIZE_BYTES_MAX,
  PRUNE_CRASH_THRESHOLD,
  checkIndexAgreesWithLog,
  checkVersions,
  recordFiles,
  versionContent,
  type RecordedVersion,
} from './fixtures/version-history.ts'

const CHILD = fileURLToPath(new URL('./fixtures/prune-child.ts', import.meta.url))
/** A child not killed or finished by then has hung: the test fails. */
const CHILD_RUN_MS_MAX = 60_000
const KILLS = 8
/** A prune of this history takes some 50-100 ms here: the kills spread over that. */
const KILL_DELAY_STEP_MS = 11
const PATHS = ['a.bin', 'deep/b.bin', 'deep/er/c.bin', 'd.bin']
const STEP_MS = 12 * HOUR_MS
const POLICY = retentionPolicy({ keepAllWithin: '1d', keepDaily: 3, keepWeekly: 2, maxAge: '14d' })

/** Records `steps` more steps of history, each changing about half of the paths. */
async function extendHistory(
  dataset: Dataset,
  root: string,
  clock: { nowMs: number },
  firstStep: number,
  steps: number,
): Promise<RecordedVersion[]> {
  const recorded: RecordedVersion[] = []
  for (let step = firstStep; step < firstStep + steps; step++) {
    clock.nowMs = HISTORY_START_MS + step * STEP_MS
    const files = new Map<string, Buffer>()
    PATHS.forEach((path, index) => {
      if ((step + index) % 2 === 0 || step === 0)
        files.set(
          path,
          versionContent(path, step, 100_000 + ((step * 7919 + index * 104_729) % 500_000)),
        )
    })
    recorded.push(...(await recordFiles(dataset, root, files)))
    if (step % 9 === 4) await dataset.addRecoveryPoint(`step ${step}`)
  }
  return recorded
}

/** Runs a prune child and kills it `delayMs` after it started pruning; true if it was still working. */
async function pruneAndKill(data: string, nowMs: number, delayMs: number): Promise<boolean> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, data, String(nowMs)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  let errors = ''
  child.stderr.on('data', (bytes: Buffer) => (errors += bytes.toString()))
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()))
  const guard = setTimeout(() => child.kill('SIGKILL'), CHILD_RUN_MS_MAX)
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (bytes: Buffer) => {
        output += bytes.toString()
        if (output.includes('"started"')) resolve()
      })
      child.on('close', () => reject(new Error(`prune child ended before starting: ${errors}`)))
    })
    await sleep(delayMs)
  } finally {
    clearTimeout(guard)
    killByPid(child.pid!)
    await exited
  }
  return !output.includes('"done"')
}

/** SIGKILL to one pid; a child that has just ended on its own is no error. */
function killByPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error
  }
}

/** The store as the child opens it, with the clock reading `clock.nowMs`. */
function openStore(data: string, clock: { readonly nowMs: number }): Promise<NodeStore> {
  return NodeStore.open(data, {
    nowMs: () => clock.nowMs,
    chunkStore: { packSizeBytesMax: PRUNE_CRASH_PACK_SIZE_BYTES_MAX },
  })
}

/** The file versions `POLICY` keeps at `nowMs`, over every path of the dataset. */
async function keptVersions(dataset: Dataset, nowMs: number): Promise<Set<LogSeq>> {
  const pinned = (await dataset.index.recoveryPoints()).map((point) => point.length)
  const kept = new Set<LogSeq>()
  for (const path of PATHS)
    for (const seq of keptVersionsOfPath(
      await dataset.index.versionsOf(path as DatasetPath),
      pinned,
      POLICY,
      nowMs,
    ))
      kept.add(seq)
  return kept
}

/** Whether some chunk that only pruned versions use is still in the chunk index: the chunk prune had not got far. */
async function deadChunksRemain(
  store: NodeStore,
  recorded: readonly RecordedVersion[],
  pruned: ReadonlySet<LogSeq>,
): Promise<boolean> {
  const hashes = (versions: readonly RecordedVersion[]): Set<ChunkHash> =>
    new Set(versions.flatMap((version) => chunkBytes(version.content).map((chunk) => chunk.hash)))
  const live = hashes(recorded.filter((version) => !pruned.has(version.seq)))
  for (const hash of hashes(recorded.filter((version) => pruned.has(version.seq))))
    if (!live.has(hash) && (await store.chunkStore.has(hash))) return true
  return false
}

test('kill -9 during prune: kept versions restore byte-exact, pruned ones read PRUNED, the index agrees with the log', () =>
  withTempDir(async (directory) => {
    const data = join(directory, 'data')
    const root = join(directory, 'set')
    const clock = { nowMs: HISTORY_START_MS }
    const recorded: RecordedVersion[] = []
    let step = 0
    let store = await openStore(data, clock)
    try {
      const dataset = await store.ownDataset(PRUNE_CRASH_DATASET)
      await dataset.setRetention(POLICY)
      recorded.push(...(await extendHistory(dataset, root, clock, step, 24)))
      step += 24
    } finally {
      await store.close()
    }
    let interrupted = 0
    let prunedBefore = 0
    const killedAt = { beforeMarks: 0, afterMarks: 0, afterDeadChunksLeftTheIndex: 0 }
    for (let round = 0; round < KILLS; round++) {
      const nowMs = clock.nowMs + HOUR_MS
      if (await pruneAndKill(data, nowMs, round * KILL_DELAY_STEP_MS)) interrupted++
      store = await openStore(data, clock)
      try {
        const dataset = await store.ownDataset(PRUNE_CRASH_DATASET)
        const pruned = await checkVersions(dataset, recorded)
        for (const seq of await keptVersions(dataset, nowMs))
          assert.not.ok(pruned.has(seq), `version ${seq}, which the policy keeps, is not pruned`)
        if (pruned.size === prunedBefore) killedAt.beforeMarks++
        else if (await deadChunksRemain(store, recorded, pruned)) killedAt.afterMarks++
        else killedAt.afterDeadChunksLeftTheIndex++
        prunedBefore = pruned.size
        await checkIndexAgreesWithLog(dataset)
        // More history, so that the next round's prune has new work.
        clock.nowMs = HISTORY_START_MS + step * STEP_MS
        recorded.push(...(await extendHistory(dataset, root, clock, step, 6)))
        step += 6
      } finally {
        await store.close()
      }
    }
    console.log(`interrupted ${interrupted} of ${KILLS}; state found:`, killedAt)
    assert.ok(interrupted > 0, 'a kill landed while the child was pruning')

    clock.nowMs += HOUR_MS
    const nowMs = clock.nowMs
    store = await openStore(data, clock)
    try {
      const dataset = await store.ownDataset(PRUNE_CRASH_DATASET)
      await store.prune({ liveShareThreshold: PRUNE_CRASH_THRESHOLD })
      const kept = await keptVersions(dataset, nowMs)
      const pruned = await checkVersions(dataset, recorded)
      assert.equal(
        [...pruned].sort((a, b) => a - b),
        recorded.map((version) => version.seq).filter((seq) => !kept.has(seq)),
      )
      assert.not.ok(await deadChunksRemain(store, recorded, pruned))
      // A whole tree at a recovery point restores as it was.
      const [point] = await dataset.index.recoveryPoints()
      const destination = join(directory, 'restored')
      await dataset.restore({ point: { recoveryPoint: point!.label }, destination })
      for (const path of PATHS) {
        const live = recorded
          .filter((version) => version.path === path && version.seq < point!.length)
          .at(-1)
        assert.ok(
          live !== undefined && (await readFile(join(destination, path))).equals(live.content),
        )
      }
    } finally {
      await store.close()
    }
  }))

test.run()
