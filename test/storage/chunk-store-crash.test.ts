// Real processes killed with SIGKILL while they put, flush and prune: after each kill the
// store is reopened here and every chunk the child acknowledged (printed after flush()
// returned) must be there, byte for byte, unless prune was told it is dead.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ChunkStore } from '../../storage/chunk-store.ts'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import { withTempDir } from '../helpers/temp-dir.ts'
import {
  CRASH_LIVE_SHARE_THRESHOLD,
  CRASH_PACK_SIZE_BYTES_MAX,
  isLiveInCrashTests,
  packFiles,
  seriesChunk,
} from './fixtures/chunk-store-files.ts'

const CHILD = fileURLToPath(new URL('./fixtures/chunk-store-child.ts', import.meta.url))
/** A child that has not been killed by then has hung: the test fails. */
const CHILD_RUN_MS_MAX = 60_000

interface KilledRun {
  readonly acknowledged: Map<number, ChunkHash>
  /** The last prune the child announced had not ended when it died. */
  readonly diedInPrune: boolean
  readonly pruneDurationsMs: number[]
}

/**
 * Runs the child until `killDelayMs` (called on every line it prints, with what it has
 * printed so far) returns a delay, then kills it with SIGKILL that long afterwards.
 */
async function runAndKill(
  directory: string,
  mode: 'put' | 'churn',
  seed: string,
  firstIndex: number,
  killDelayMs: (run: KilledRun) => number | null,
): Promise<KilledRun> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', CHILD, directory, mode, seed, String(firstIndex)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const acknowledged = new Map<number, ChunkHash>()
  const pruneDurationsMs: number[] = []
  let inPrune = false
  let killScheduled = false
  let errors = ''
  let pendingLine = ''
  const run = (): KilledRun => ({ acknowledged, diedInPrune: inPrune, pruneDurationsMs })
  const guard = setTimeout(() => child.kill('SIGKILL'), CHILD_RUN_MS_MAX)
  child.stderr.on('data', (data: Buffer) => (errors += data.toString()))
  child.stdout.on('data', (data: Buffer) => {
    const lines = (pendingLine + data.toString()).split('\n')
    pendingLine = lines.pop()!
    for (const line of lines) {
      const [word, first, second] = line.split(' ')
      if (word === 'ack') acknowledged.set(Number(first), second as ChunkHash)
      if (word === 'prune-start') inPrune = true
      if (word === 'prune-end') {
        inPrune = false
        pruneDurationsMs.push(Number(first))
      }
      const delayMs = killScheduled ? null : killDelayMs(run())
      if (delayMs !== null) {
        killScheduled = true
        setTimeout(() => child.kill('SIGKILL'), delayMs)
      }
    }
  })
  const signal = await new Promise<NodeJS.Signals | null>((resolve) =>
    child.on('exit', (_code, exitSignal) => resolve(exitSignal)),
  )
  clearTimeout(guard)
  assert.ok(killScheduled, `the child ended before it was killed: ${errors}`)
  assert.is(signal, 'SIGKILL', `the child failed: ${errors}`)
  return run()
}

async function assertAcknowledgedStored(
  directory: string,
  seed: string,
  acknowledged: ReadonlyMap<number, ChunkHash>,
  isLive: (hash: string) => boolean,
): Promise<ChunkStore> {
  const store = await ChunkStore.open(directory, { packSizeBytesMax: CRASH_PACK_SIZE_BYTES_MAX })
  for (const [index, hash] of acknowledged) {
    if (!isLive(hash)) continue
    const expected = seriesChunk(seed, index)
    assert.is(hash, expected.hash)
    const bytes = await store.get(hash)
    assert.ok(Buffer.from(bytes).equals(expected.bytes), `chunk ${index} comes back byte-exact`)
  }
  return store
}

test('killed during put and flush: every acknowledged chunk survives', async () => {
  await withTempDir(async (directory) => {
    const seed = 'crash-put'
    const acknowledged = new Map<number, ChunkHash>()
    // Kill after a few acknowledgements, at varied delays, so the kill falls in puts,
    // in the middle of a pack write, or between a pack sync and its index batch.
    const kills = [
      { acksMin: 3, delayMs: 0 },
      { acksMin: 20, delayMs: 3 },
      { acksMin: 8, delayMs: 11 },
      { acksMin: 30, delayMs: 1 },
    ]
    for (const [round, kill] of kills.entries()) {
      const run = await runAndKill(directory, 'put', seed, round * 100_000, (progress) =>
        progress.acknowledged.size >= kill.acksMin ? kill.delayMs : null,
      )
      assert.ok(run.acknowledged.size >= kill.acksMin)
      for (const [index, hash] of run.acknowledged) acknowledged.set(index, hash)
      const store = await assertAcknowledgedStored(directory, seed, acknowledged, () => true)
      await store.close()
    }
  })
})

test('killed during prune: every live acknowledged chunk survives, no pack is left over', async () => {
  await withTempDir(async (directory) => {
    const seed = 'crash-prune'
    const acknowledged = new Map<number, ChunkHash>()
    let diedInPrune = 0
    // After two whole prunes, kill at a share of the last one's duration into the third.
    const shares = [0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9]
    for (const [round, share] of shares.entries()) {
      const run = await runAndKill(directory, 'churn', seed, round * 100_000, (progress) =>
        progress.diedInPrune && progress.pruneDurationsMs.length >= 2
          ? Math.floor(share * progress.pruneDurationsMs.at(-1)!)
          : null,
      )
      if (run.diedInPrune) diedInPrune++
      for (const [index, hash] of run.acknowledged) acknowledged.set(index, hash)
      const store = await assertAcknowledgedStored(
        directory,
        seed,
        acknowledged,
        isLiveInCrashTests,
      )
      await store.close()
    }
    assert.ok(diedInPrune >= 4, `only ${diedInPrune} kills fell inside a prune`)

    const store = await assertAcknowledgedStored(directory, seed, acknowledged, isLiveInCrashTests)
    try {
      await store.prune(isLiveInCrashTests, { liveShareThreshold: CRASH_LIVE_SHARE_THRESHOLD })
      for (const hash of acknowledged.values()) {
        assert.is(await store.has(hash), isLiveInCrashTests(hash))
      }
      // Every pack file on disk is one the store knows: nothing orphaned or retired is left.
      assert.is((await store.stats()).packs, (await packFiles(directory)).length)
    } finally {
      await store.close()
    }
  })
})

test.run()
