// Retention: which versions of each path a dataset keeps under its policy, and the step
// that marks the others pruned. The decision is a pure function of one path's history,
// the recovery points, the policy and the time. Only file versions hold chunks, so only
// they are pruned; directories, links and deletes cost nothing beyond the log, which is
// append-only and keeps every record anyway.
//
// Kept, for each path: the current version (if the path still exists as a file); the
// version live at every recovery point; every version recorded within the window; and,
// among older versions younger than the maximum age, the newest one in each of the
// `keepHourly` most recent hours that have one, likewise for days, weeks and months
// (restic's rules, each counted on its own, so one version may serve several). Times
// are the master's record times, and calendar buckets are in UTC.
import { assert } from '../consensus/assert.ts'
import type { RetentionPolicy } from './retention-policy.ts'
import type { VersionEntry, VersionIndex } from './version-index.ts'
import type { DatasetPath, LogSeq } from './version-record.ts'

/** Versions of one path held in memory to decide on it; a path with more is left whole. */
export const RETENTION_VERSIONS_PER_PATH_MAX = 1_000_000
/** Pruned marks written per synced batch. */
export const RETENTION_MARK_BATCH_MAX = 1000

/** What the decision needs to know of a version (a VersionEntry has it). */
export interface VersionFacts {
  readonly seq: LogSeq
  readonly kind: VersionEntry['kind']
  readonly recordedAtMs: number
}

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS
/** 1970-01-01 was a Thursday: three days after the Monday that starts its ISO week. */
const EPOCH_DAYS_AFTER_MONDAY = 3

type BucketOf = (timeMs: number) => number

const hourOf: BucketOf = (timeMs) => Math.floor(timeMs / HOUR_MS)
const dayOf: BucketOf = (timeMs) => Math.floor(timeMs / DAY_MS)
const weekOf: BucketOf = (timeMs) => Math.floor((dayOf(timeMs) + EPOCH_DAYS_AFTER_MONDAY) / 7)
const monthOf: BucketOf = (timeMs) => {
  const date = new Date(timeMs)
  return date.getUTCFullYear() * 12 + date.getUTCMonth()
}

/**
 * The seqs of the file versions of one path that `policy` keeps at `nowMs`. `versions` are
 * all the path's versions, oldest first; `pinnedLengths` the recovery points' log lengths,
 * ascending.
 */
export function keptVersionsOfPath(
  versions: readonly VersionFacts[],
  pinnedLengths: readonly number[],
  policy: RetentionPolicy,
  nowMs: number,
): Set<LogSeq> {
  const keep = new Set<LogSeq>()
  const keepIfFile = (version: VersionFacts | undefined): void => {
    if (version?.kind === 'file') keep.add(version.seq)
  }
  keepIfFile(versions.at(-1))
  let after = 0 // versions[after] is the first version not before the point
  let previousLength = 0
  for (const length of pinnedLengths) {
    assert(length >= previousLength, 'recovery point lengths come in ascending order')
    previousLength = length
    while (after < versions.length && versions[after]!.seq < length) after++
    keepIfFile(versions[after - 1])
  }
  const windowStartMs = nowMs - policy.keepAllWithinMs
  const oldestMs = policy.maxAgeMs === null ? -Infinity : nowMs - policy.maxAgeMs
  const older: VersionFacts[] = [] // newest first
  for (let index = versions.length - 1; index >= 0; index--) {
    const version = versions[index]!
    if (version.kind !== 'file') continue
    if (version.recordedAtMs >= windowStartMs) keep.add(version.seq)
    else if (version.recordedAtMs >= oldestMs) older.push(version)
  }
  const rules: [number, BucketOf][] = [
    [policy.keepHourly, hourOf],
    [policy.keepDaily, dayOf],
    [policy.keepWeekly, weekOf],
    [policy.keepMonthly, monthOf],
  ]
  for (const [count, bucketOf] of rules) keepNewestPerBucket(older, count, bucketOf, keep)
  return keep
}

/** Walks versions newest first and keeps the first one of each bucket, for `count` buckets. */
function keepNewestPerBucket(
  newestFirst: readonly VersionFacts[],
  count: number,
  bucketOf: BucketOf,
  keep: Set<LogSeq>,
): void {
  let remaining = count
  let lastBucket: number | null = null
  for (const version of newestFirst) {
    if (remaining === 0) return
    const bucket = bucketOf(version.recordedAtMs)
    if (bucket === lastBucket) continue
    keep.add(version.seq)
    lastBucket = bucket
    remaining--
  }
}

export interface RetentionReport {
  /** File versions marked pruned by this run. */
  readonly versionsPruned: number
  /** File versions left unpruned. */
  readonly versionsKept: number
  /** Paths with more versions than the bound (RETENTION_VERSIONS_PER_PATH_MAX), left whole. */
  readonly pathsSkipped: readonly DatasetPath[]
}

/**
 * Marks every file version that `policy` does not keep as pruned, in synced batches: the
 * marks are durable before prune may remove any chunk. A version once pruned stays so.
 */
export async function applyRetention(
  index: VersionIndex,
  policy: RetentionPolicy,
  nowMs: number,
  versionsPerPathMax = RETENTION_VERSIONS_PER_PATH_MAX,
): Promise<RetentionReport> {
  await index.catchUp()
  const pinnedLengths = (await index.recoveryPoints()).map((point) => point.length)
  const alreadyPruned = await index.prunedSeqs()
  const marks: { seq: LogSeq; path: DatasetPath }[] = []
  const pathsSkipped: DatasetPath[] = []
  let versionsPruned = 0
  let versionsKept = 0
  const decide = async (path: DatasetPath, versions: readonly VersionFacts[]): Promise<void> => {
    const keep = keptVersionsOfPath(versions, pinnedLengths, policy, nowMs)
    for (const { seq, kind } of versions) {
      if (kind !== 'file' || alreadyPruned.has(seq)) continue
      if (keep.has(seq)) {
        versionsKept++
        continue
      }
      marks.push({ seq, path })
      versionsPruned++
      if (marks.length >= RETENTION_MARK_BATCH_MAX) await index.markPrunedAll(marks.splice(0))
    }
  }
  let path: DatasetPath | null = null
  let versions: VersionFacts[] = []
  let skipping = false
  for await (const entry of index.allVersions()) {
    if (entry.path !== path) {
      if (path !== null && !skipping) await decide(path, versions)
      path = entry.path
      versions = []
      skipping = false
    }
    if (skipping) continue
    if (versions.length === versionsPerPathMax) {
      pathsSkipped.push(entry.path)
      versions = []
      skipping = true
      continue
    }
    versions.push({ seq: entry.seq, kind: entry.kind, recordedAtMs: entry.recordedAtMs })
  }
  if (path !== null && !skipping) await decide(path, versions)
  if (marks.length > 0) await index.markPrunedAll(marks)
  return { versionsPruned, versionsKept, pathsSkipped }
}
