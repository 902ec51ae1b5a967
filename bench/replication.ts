// `npm run bench:replication`: real clusterreplica processes inside a network namespace
// this benchmark creates (loopback only, so its traffic can be counted and nothing leaves
// the machine), each figure beside a raw TCP copy of the same bytes in the same run.
// Replicas make data durable (chunk store and mirror files fsynced) before they report it;
// the reference is `tar | socket | tar -x` to every replica's directory at once, followed by
// `sync`, and without the sync. The edit and the burst are timed twice: until every replica
// holds the new versions durably in its store (restorable; read from each replica's own
// control socket, so no traffic is added) and until they are in every mirror; the burst's
// reference is the same 1,000 files created again on this disk by `cp -r` + `sync`.
// BENCH_SCALE=0.1 shrinks the tree for a quick look; BENCH_REPLICAS=1 runs only the cluster
// with that many replicas; BENCH_PROFILE_DIR=DIR writes a CPU profile of every node there;
// BENCH_TRACE=MS prints every replica's progress every MS milliseconds; BENCH_PHASES=edit,burst runs
// only those phases after the initial replication (all of edit, burst, latency by default).
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { LocalNode } from '../node/cli/local-node.ts'
import type { LocalStatus } from '../node/daemon/status-service.ts'
import type { StatusReport } from '../node/daemon/status-types.ts'

const SCALE = Number(process.env['BENCH_SCALE'] ?? 1)
const SMALL_FILES = Math.round(5000 * SCALE)
const MEDIUM_FILES = Math.round(20 * SCALE)
const LARGE_FILES = 2
const LARGE_FILE_BYTES = Math.round(256 * 1024 * 1024 * Math.min(1, SCALE * 4))
const BURST_FILES = 1000
const EDIT_BYTES = 4096
/** How long the cluster's background traffic is measured for. */
const IDLE_WIRE_MS = 2000
const LATENCY_WRITES = 20
const WAIT_MS_MAX = 15 * 60_000
const MiB = 1024 * 1024
const REPLICA_COUNTS = (process.env['BENCH_REPLICAS'] ?? '1,3').split(',').map(Number)
const PROFILE_DIRECTORY = process.env['BENCH_PROFILE_DIR']
const TRACE_EVERY_MS = Number(process.env['BENCH_TRACE'] ?? 0)
const PHASES = new Set((process.env['BENCH_PHASES'] ?? 'edit,burst,latency').split(','))

const namespace = `cr-bench-${randomBytes(3).toString('hex')}`
const inNamespace = (command: string[]): string[] => ['ip', 'netns', 'exec', namespace, ...command]

interface TreeFacts {
  readonly files: number
  readonly bytes: number
}

async function generateTree(root: string): Promise<TreeFacts> {
  let bytes = 0
  const put = async (path: string, size: number): Promise<void> => {
    const file = await open(path, 'w')
    for (let written = 0; written < size; written += 8 * MiB)
      await file.write(randomBytes(Math.min(8 * MiB, size - written)))
    await file.close()
    bytes += size
  }
  for (let index = 0; index < SMALL_FILES; index++) {
    const directory = join(
      root,
      `level-${index % 10}`,
      `sub-${Math.floor(index / 10) % 10}`,
      `leaf-${Math.floor(index / 100) % 5}`,
    )
    await mkdir(directory, { recursive: true })
    await put(join(directory, `small-${index}.dat`), 1024 + Math.floor(Math.random() * 63 * 1024))
  }
  await mkdir(join(root, 'medium'), { recursive: true })
  for (let index = 0; index < MEDIUM_FILES; index++)
    await put(
      join(root, 'medium', `medium-${index}.dat`),
      MiB + Math.floor(Math.random() * 7 * MiB),
    )
  await mkdir(join(root, 'large'), { recursive: true })
  for (let index = 0; index < LARGE_FILES; index++)
    await put(join(root, 'large', `large-${index}.dat`), LARGE_FILE_BYTES)
  return { files: SMALL_FILES + MEDIUM_FILES + LARGE_FILES, bytes }
}

/** Files and bytes under a directory: a cheap check that a mirror is complete (verified by content afterwards). */
async function countTree(root: string): Promise<TreeFacts> {
  let files = 0
  let bytes = 0
  const walk = async (directory: string): Promise<void> => {
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const path = join(directory, entry.name)
      if (entry.isDirectory()) await walk(path)
      else if (entry.isFile()) {
        files++
        bytes += (await stat(path)).size
      }
    }
  }
  await walk(root).catch(() => undefined)
  return { files, bytes }
}

async function waitFor(what: string, check: () => Promise<boolean>, pollMs = 100): Promise<void> {
  const deadline = Date.now() + WAIT_MS_MAX
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await sleep(pollMs)
  }
  throw new Error(`timed out waiting for ${what}`)
}

function loopbackBytes(): number {
  const [link] = JSON.parse(
    execFileSync('ip', ['-n', namespace, '-s', '-j', 'link', 'show', 'lo'], { encoding: 'utf8' }),
  ) as {
    stats64: { tx: { bytes: number } }
  }[]
  return link!.stats64.tx.bytes
}

/** Prints the master's length and each replica's complete and mirrored lengths until stopped. */
async function traceProgress(
  status: () => Promise<StatusReport>,
  signal: AbortSignal,
): Promise<void> {
  const startedMs = performance.now()
  while (!signal.aborted) {
    const report = await status().catch(() => null)
    const lags = report?.replication ?? []
    const seconds = ((performance.now() - startedMs) / 1000).toFixed(1)
    console.log(
      `  ${seconds} s master ${lags[0]?.masterLength ?? '?'} | ` +
        lags
          .map(
            (lag) =>
              `${lag.replica} complete ${lag.replicaLength ?? '?'} mirrored ${lag.mirroredLength ?? '?'} ` +
              `fetched ${((lag.bytesFetched ?? 0) / MiB).toFixed(0)} MiB`,
          )
          .join(' | '),
    )
    await sleep(TRACE_EVERY_MS, undefined, { signal }).catch(() => undefined)
  }
}

/**
 * Writes back everything dirty before a timed phase starts. This machine's ext4 has no
 * journal, and there a new inode is not taken from among those deleted within the last
 * 30 s whose inode table is still dirty: each file created then scans past every one of
 * them (measured: 3 s of a replica's CPU creating the tree's 5,022 files just after the
 * reference's copy of it was deleted). After a sync nothing is dirty, so no phase, the
 * reference's or the cluster's, pays for what an earlier one deleted.
 */
function settleDisk(): void {
  execFileSync('sync')
}

/** The raw copy of `source` to every destination at once (one tar stream each). */
async function rawCopy(
  source: string,
  destinations: readonly string[],
): Promise<{ copyMs: number; copyAndSyncMs: number }> {
  for (const destination of destinations) await mkdir(destination, { recursive: true })
  settleDisk()
  const command = inNamespace([
    process.execPath,
    '--import',
    'tsx',
    join(import.meta.dirname, 'raw-tar-copy.ts'),
    source,
    ...destinations,
  ])
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout!.on('data', (data: Buffer) => (output += data.toString()))
  await new Promise<void>((resolve, reject) =>
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`raw copy exited ${code}`)),
    ),
  )
  return JSON.parse(output) as { copyMs: number; copyAndSyncMs: number }
}

/** Loopback bytes per second while the cluster has nothing to replicate (Raft heartbeats). */
async function idleWireBytesPerSecond(): Promise<number> {
  const before = loopbackBytes()
  await sleep(IDLE_WIRE_MS)
  return ((loopbackBytes() - before) * 1000) / IDLE_WIRE_MS
}

/** Chunk bytes every replica has fetched since it started. */
async function bytesFetched(status: () => Promise<StatusReport>): Promise<number> {
  const report = await status()
  return report.replication.reduce((sum, lag) => sum + (lag.bytesFetched ?? 0), 0)
}

async function readRange(path: string, offset: number, length: number): Promise<Buffer> {
  const file = await open(path, 'r')
  try {
    const piece = Buffer.alloc(length)
    const { bytesRead } = await file.read(piece, 0, length, offset)
    return piece.subarray(0, bytesRead)
  } finally {
    await file.close()
  }
}

/**
 * Polls every replica's own view of a dataset (its control socket: no network traffic) and
 * keeps, per sample, the length each holds complete, so that the moment every replica
 * first held a length can be found once it is known which length counts.
 */
class CompletionWatch {
  readonly #samples: { readonly atMs: number; readonly lengths: readonly number[] }[] = []
  readonly #stop = new AbortController()
  readonly #running: Promise<void>

  constructor(replicas: readonly LocalNode[], datasetId: string, pollMs = 5) {
    this.#running = (async () => {
      while (!this.#stop.signal.aborted) {
        const lengths = await Promise.all(
          replicas.map(async (replica) => {
            const local = (await replica.control('localStatus')) as LocalStatus
            return local.datasets.find((dataset) => dataset.id === datasetId)?.completeLength ?? 0
          }),
        )
        this.#samples.push({ atMs: performance.now(), lengths })
        await sleep(pollMs, undefined, { signal: this.#stop.signal }).catch(() => undefined)
      }
    })()
  }

  /** Stops polling; then when every replica first held `length` complete (null: never seen). */
  async firstCompleteMs(length: number): Promise<number | null> {
    this.#stop.abort()
    await this.#running
    return (
      this.#samples.find((sample) => sample.lengths.every((held) => held >= length))?.atMs ?? null
    )
  }
}

async function masterLogLength(primary: LocalNode, datasetId: string): Promise<number> {
  const local = (await primary.control('localStatus')) as LocalStatus
  return local.datasets.find((dataset) => dataset.id === datasetId)?.logLength ?? 0
}

const elapsed = (fromMs: number, toMs: number | null): string =>
  toMs === null ? 'not seen' : `${(toMs - fromMs).toFixed(0)} ms`

/** Linux's USER_HZ: /proc reports CPU time in these ticks. */
const CLOCK_TICKS_PER_SECOND = 100

/** CPU time (user + system) a process has used, from /proc. */
async function cpuMsOf(pid: number | null): Promise<number> {
  if (pid === null) return 0
  const afterName = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')
  // utime and stime are the 14th and 15th fields; the 3rd is the first after the name.
  return ((Number(afterName[11]) + Number(afterName[12])) * 1000) / CLOCK_TICKS_PER_SECOND
}

const mibPerSecond = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000)
const percentile = (values: number[], share: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(share * sorted.length) - 1)]!
}

async function runCluster(
  root: string,
  tree: string,
  facts: TreeFacts,
  replicaCount: number,
  raw: { copyMs: number; copyAndSyncMs: number },
): Promise<void> {
  const nodes: LocalNode[] = []
  const tracing = new AbortController()
  const base = 47_100 + replicaCount * 10
  const node = (name: string, index: number): LocalNode => {
    const created = new LocalNode(name, join(root, `cluster-${replicaCount}`, name), base + index, {
      wrapper: ['ip', 'netns', 'exec', namespace],
    })
    nodes.push(created)
    return created
  }
  try {
    const primary = node('primary', 0)
    await primary.init()
    await primary.start()
    const replicas = Array.from({ length: replicaCount }, (_, index) =>
      node(`replica-${index + 1}`, index + 1),
    )
    for (const replica of replicas) {
      await replica.start([primary.address])
      await waitFor(`${replica.name} to ask to join`, async () =>
        ((await primary.control('pending')) as { name: string }[]).some(
          (pending) => pending.name === replica.name,
        ),
      )
      await primary.control('admit', { name: replica.name, roles: ['replica'] })
    }
    const mirrors = replicas.map((replica) =>
      join(root, `cluster-${replicaCount}`, `mirror-${replica.name}`),
    )
    const status = async (): Promise<StatusReport> =>
      (await primary.control('status')) as StatusReport
    if (TRACE_EVERY_MS > 0) void traceProgress(status, tracing.signal)
    // CPU time per node during a phase: steadier than wall time on a shared machine.
    let cpuBefore: number[] = []
    const cpuSnapshot = (): Promise<number[]> =>
      Promise.all(nodes.map((running) => cpuMsOf(running.pid)))
    const cpuUsed = async (): Promise<string> => {
      const now = await cpuSnapshot()
      const used = nodes.map(
        (running, index) =>
          `${running.name} ${((now[index]! - cpuBefore[index]!) / 1000).toFixed(1)} s`,
      )
      cpuBefore = now
      return `CPU ${used.join(', ')}`
    }
    settleDisk()
    cpuBefore = await cpuSnapshot()
    const startedMs = performance.now()
    await primary.control('datasetAdd', {
      id: 'tree',
      master: 'primary',
      path: tree,
      replicas: replicas.map((replica, index) => ({ name: replica.name, mirror: mirrors[index] })),
    })
    await waitFor(
      'every mirror to hold the tree',
      async () => {
        const counts = await Promise.all(mirrors.map(countTree))
        return counts.every((count) => count.files === facts.files && count.bytes === facts.bytes)
      },
      250,
    )
    const initialMs = performance.now() - startedMs
    const initial = mibPerSecond(facts.bytes, initialMs)
    const rawSynced = mibPerSecond(facts.bytes, raw.copyAndSyncMs)
    const rawPlain = mibPerSecond(facts.bytes, raw.copyMs)
    console.log(
      `initial replication to ${replicaCount} replica(s): ${initial.toFixed(1)} MiB/s (${(initialMs / 1000).toFixed(1)} s) | ` +
        `raw tar over TCP to ${replicaCount} destination(s) + sync ${rawSynced.toFixed(1)} MiB/s, ratio ${(initial / rawSynced).toFixed(2)} | ` +
        `without sync ${rawPlain.toFixed(1)} MiB/s, ratio ${(initial / rawPlain).toFixed(2)} (goal ≥ 0.5) | ${await cpuUsed()}`,
    )

    const allMirrored = async (): Promise<boolean> => {
      const report = await status()
      return report.replication.every(
        (lag) => lag.masterLength !== null && lag.mirroredLength === lag.masterLength,
      )
    }
    await waitFor('every mirror to be up to date', allMirrored)

    // A 4 KiB overwrite in the middle of a 256 MiB file. Its arrival is watched in the
    // mirrors' files, not through `status`, which asks every node over the network.
    if (PHASES.has('edit')) {
      const large = join('large', 'large-0.dat')
      const offset = Math.floor(LARGE_FILE_BYTES / 2)
      const edit = randomBytes(EDIT_BYTES)
      const fetchedBefore = await bytesFetched(status)
      const backgroundBytesPerSecond = await idleWireBytesPerSecond()
      const wireBefore = loopbackBytes()
      const lengthBefore = await masterLogLength(primary, 'tree')
      settleDisk()
      cpuBefore = await cpuSnapshot()
      const completion = new CompletionWatch(replicas, 'tree')
      const editStartedMs = performance.now()
      const file = await open(join(tree, large), 'r+')
      await file.write(edit, 0, EDIT_BYTES, offset)
      await file.close()
      await waitFor(
        'the edit in every mirror',
        async () => {
          const pieces = await Promise.all(
            mirrors.map((mirror) => readRange(join(mirror, large), offset, EDIT_BYTES)),
          )
          return pieces.every((piece) => piece.equals(edit))
        },
        2,
      )
      const editMs = performance.now() - editStartedMs
      const wireBytes = loopbackBytes() - wireBefore
      const storedMs = await completion.firstCompleteMs(lengthBefore + 1)
      const cpu = await cpuUsed()
      const chunkBytes = (await bytesFetched(status)) - fetchedBefore
      const rawEdit = mibPerSecond(LARGE_FILE_BYTES, raw.copyAndSyncMs) // what re-sending the file would cost at the raw rate
      console.log(
        `4 KiB overwrite in a ${LARGE_FILE_BYTES / MiB} MiB file, on ${replicaCount} replica(s): ` +
          `in every replica's store ${elapsed(editStartedMs, storedMs)}, in every mirror ${editMs.toFixed(0)} ms, ` +
          `${(wireBytes / 1024).toFixed(0)} KiB on the wire (all loopback traffic in the namespace; ` +
          `of it chunks ${(chunkBytes / 1024).toFixed(0)} KiB, and about ${((backgroundBytesPerSecond * editMs) / 1000 / 1024).toFixed(0)} KiB ` +
          `the cluster sends when idle, Raft heartbeats; goal < 0.5 s and < 200 KiB) | ` +
          `re-sending the whole file at the raw rate: ${((LARGE_FILE_BYTES / MiB / rawEdit) * 1000).toFixed(0)} ms and ${LARGE_FILE_BYTES / 1024} KiB | ${cpu}`,
      )
    }

    // A burst of 1,000 new 4 KiB files.
    if (PHASES.has('burst')) {
      const burst = join(tree, 'burst')
      await mkdir(burst)
      const contents = Array.from({ length: BURST_FILES }, () => randomBytes(4096))
      settleDisk()
      cpuBefore = await cpuSnapshot()
      const completion = new CompletionWatch(replicas, 'tree')
      const burstStartedMs = performance.now()
      await Promise.all(
        contents.map((content, index) => writeFile(join(burst, `burst-${index}.dat`), content)),
      )
      const writtenMs = performance.now() - burstStartedMs
      await waitFor(
        'the burst on every mirror',
        async () => {
          const counts = await Promise.all(
            mirrors.map((mirror) =>
              readdir(join(mirror, 'burst')).then(
                (names) => names.filter((name) => name.endsWith('.dat')).length,
              ),
            ),
          )
          return counts.every((count) => count === BURST_FILES)
        },
        10,
      )
      const burstMs = performance.now() - burstStartedMs
      const cpu = await cpuUsed()
      const storedMs = await completion.firstCompleteMs(await masterLogLength(primary, 'tree'))
      const again = join(root, `burst-copy-${replicaCount}`)
      settleDisk()
      const copyStartedMs = performance.now()
      execFileSync('cp', ['-r', burst, again])
      execFileSync('sync')
      const copyMs = performance.now() - copyStartedMs
      await rm(again, { recursive: true })
      console.log(
        `burst of ${BURST_FILES} new 4 KiB files (written in ${writtenMs.toFixed(0)} ms) on all ${replicaCount} replica(s): ` +
          `in every replica's store ${elapsed(burstStartedMs, storedMs)}, in every mirror ${burstMs.toFixed(0)} ms (goal < 1 s) | ` +
          `the same files created again by cp -r + sync on this disk: ${copyMs.toFixed(0)} ms | ${cpu}`,
      )
    }

    // Latency from a 1 KiB file's close on the master to its content in a replica's mirror.
    if (PHASES.has('latency')) {
      const latencies: number[] = []
      for (let index = 0; index < LATENCY_WRITES; index++) {
        const content = randomBytes(1024)
        const target = join(mirrors[0]!, `latency-${index}.dat`)
        await writeFile(join(tree, `latency-${index}.dat`), content)
        const closedMs = performance.now()
        await waitFor(
          'the small file in the mirror',
          async () => (await readFile(target)).equals(content),
          1,
        )
        latencies.push(performance.now() - closedMs)
        await sleep(100)
      }
      console.log(
        `latency, 1 KiB file closed on the master -> content in ${replicas[0]!.name}'s mirror, over ${LATENCY_WRITES} writes: ` +
          `median ${percentile(latencies, 0.5).toFixed(0)} ms, p95 ${percentile(latencies, 0.95).toFixed(0)} ms (goal p95 < 100 ms)`,
      )
    }
  } finally {
    tracing.abort()
    await Promise.all(nodes.map((running) => running.stop()))
  }
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'clusterreplica-bench-'))
  execFileSync('ip', ['netns', 'add', namespace])
  try {
    execFileSync('ip', ['-n', namespace, 'link', 'set', 'lo', 'up'])
    const tree = join(root, 'tree')
    const facts = await generateTree(tree)
    console.log(
      `bench:replication: ${facts.files} files, ${(facts.bytes / MiB).toFixed(0)} MiB, in network namespace ${namespace} (loopback)`,
    )
    const raws = new Map<number, { copyMs: number; copyAndSyncMs: number }>()
    for (const replicaCount of REPLICA_COUNTS) {
      const destinations = Array.from({ length: replicaCount }, (_, index) =>
        join(root, `raw-copy-${index}`),
      )
      const raw = await rawCopy(tree, destinations)
      for (const destination of destinations)
        await rm(destination, { recursive: true, force: true })
      raws.set(replicaCount, raw)
      console.log(
        `reference: tar over TCP to ${replicaCount} destination(s) at once: ${mibPerSecond(facts.bytes, raw.copyMs).toFixed(1)} MiB/s, ` +
          `with sync ${mibPerSecond(facts.bytes, raw.copyAndSyncMs).toFixed(1)} MiB/s`,
      )
    }
    // Only the nodes inherit this: the benchmark itself and the raw copy are not profiled.
    if (PROFILE_DIRECTORY !== undefined) {
      process.env['CPU_PROFILE_DIR'] = PROFILE_DIRECTORY
      process.env['NODE_OPTIONS'] =
        `${process.env['NODE_OPTIONS'] ?? ''} --import tsx --import ${join(import.meta.dirname, 'cpu-profile.ts')}`
    }
    for (const replicaCount of REPLICA_COUNTS) {
      const copy = join(root, `tree-${replicaCount}`)
      // Each cluster gets a fresh copy, so that edits made for one do not change the next one's tree.
      execFileSync('cp', ['-a', tree, copy])
      await runCluster(root, copy, facts, replicaCount, raws.get(replicaCount)!)
    }
  } finally {
    execFileSync('ip', ['netns', 'delete', namespace])
    await rm(root, { recursive: true, force: true })
  }
}

await main()
