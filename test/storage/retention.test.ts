// The retention decision on hand-made histories of one path: the current version, the
// window, each calendar rule at its UTC boundaries, the maximum age, recovery points, and
// entries that are not files. Then many seeded random histories against a second,
// set-based statement of the same rules.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { keptVersionsOfPath, type VersionFacts } from '../../storage/retention.ts'
import { retentionPolicy, type RetentionPolicyInput } from '../../storage/retention-policy.ts'
import { logSeq, type LogSeq } from '../../storage/version-record.ts'
import { SeededRandom } from '../../sim/seeded-random.ts'

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS
const NOW_MS = Date.UTC(2024, 2, 20, 0, 0) // Wednesday 20 March 2024, 00:00 UTC

/** A UTC time from 'YYYY-MM-DD HH:MM'. */
function at(text: string): number {
  return Date.parse(`${text.replace(' ', 'T')}:00Z`)
}

/** A history of one path, oldest first: seqs count up from 0 in steps of 10, like a log shared with other paths. */
function history(...versions: [VersionFacts['kind'], string | number][]): VersionFacts[] {
  return versions.map(([kind, time], index) => ({
    kind,
    seq: logSeq(index * 10),
    recordedAtMs: typeof time === 'number' ? time : at(time),
  }))
}

function kept(
  versions: readonly VersionFacts[],
  input: RetentionPolicyInput,
  pinnedLengths: readonly number[] = [],
  nowMs = NOW_MS,
): number[] {
  return [...keptVersionsOfPath(versions, pinnedLengths, retentionPolicy(input), nowMs)].sort(
    (a, b) => a - b,
  )
}

test('the current version is kept whatever the policy; a deleted path keeps nothing old', () => {
  const versions = history(['file', '2020-01-01 00:00'], ['file', '2021-06-01 00:00'])
  assert.equal(kept(versions, { keepAllWithin: 0 }), [10])
  assert.equal(kept(versions, { keepAllWithin: 0, maxAge: 0 }), [10])
  const deleted = history(['file', '2020-01-01 00:00'], ['deleted', '2021-06-01 00:00'])
  assert.equal(kept(deleted, { keepAllWithin: 0 }), [])
  assert.equal(kept([], { keepAllWithin: '1d' }), [])
})

test('every version within the window is kept, its boundary included; older ones go', () => {
  const versions = history(
    ['file', NOW_MS - DAY_MS - 1],
    ['file', NOW_MS - DAY_MS],
    ['file', NOW_MS - HOUR_MS],
    ['file', NOW_MS - 1],
    ['file', NOW_MS - 1],
    ['deleted', NOW_MS],
    ['file', NOW_MS + HOUR_MS], // a master clock ahead of ours: within the window
  )
  assert.equal(kept(versions, { keepAllWithin: '24h' }), [10, 20, 30, 40, 60])
  assert.equal(kept(versions, { keepAllWithin: '1h' }), [20, 30, 40, 60])
})

test('hourly: the newest version of each of the N most recent hours that have one', () => {
  const versions = history(
    ['file', '2024-03-18 09:10'],
    ['file', '2024-03-18 10:05'],
    ['file', '2024-03-18 10:59'], // newest of hour 10
    ['file', '2024-03-18 13:00'], // hours 11 and 12 have no versions: not counted
    ['file', '2024-03-18 13:30'],
    ['file', '2024-03-19 23:00'], // inside the window: kept, and not counted
  )
  const policy = { keepAllWithin: '1d', keepHourly: 2 }
  assert.equal(kept(versions, policy), [20, 40, 50])
  assert.equal(kept(versions, { ...policy, keepHourly: 3 }), [0, 20, 40, 50])
  assert.equal(kept(versions, { ...policy, keepHourly: 100 }), [0, 20, 40, 50])
  assert.equal(kept(versions, { ...policy, keepHourly: 0 }), [50])
})

test('daily: days end at midnight UTC', () => {
  const versions = history(
    ['file', '2024-03-10 23:59'],
    ['file', '2024-03-11 00:00'],
    ['file', '2024-03-11 18:00'],
    ['file', '2024-03-12 07:00'],
    ['file', '2024-03-19 12:00'],
  )
  assert.equal(kept(versions, { keepAllWithin: '1d', keepDaily: 2 }), [20, 30, 40])
  assert.equal(kept(versions, { keepAllWithin: '1d', keepDaily: 3 }), [0, 20, 30, 40])
})

test('weekly: ISO weeks, from Monday 00:00 UTC', () => {
  const versions = history(
    ['file', '2024-02-25 12:00'], // Sunday: the week of Monday 19 February
    ['file', '2024-02-26 00:00'], // Monday: a new week
    ['file', '2024-03-03 23:59'], // Sunday, same week as the Monday before
    ['file', '2024-03-04 00:00'], // Monday
    ['file', '2024-03-19 12:00'],
  )
  assert.equal(kept(versions, { keepAllWithin: '1d', keepWeekly: 1 }), [30, 40])
  assert.equal(kept(versions, { keepAllWithin: '1d', keepWeekly: 2 }), [20, 30, 40])
  assert.equal(kept(versions, { keepAllWithin: '1d', keepWeekly: 3 }), [0, 20, 30, 40])
})

test('weekly across a year end, and monthly across months of different lengths', () => {
  const yearEnd = history(
    ['file', '2023-12-31 23:00'], // Sunday: ISO week 52 of 2023
    ['file', '2024-01-01 01:00'], // Monday: ISO week 1 of 2024
    ['file', '2024-01-07 22:00'], // Sunday of the same week 1
  )
  assert.equal(kept(yearEnd, { keepAllWithin: 0, keepWeekly: 2 }), [0, 20])
  const months = history(
    ['file', '2023-12-31 23:59'],
    ['file', '2024-01-31 12:00'],
    ['file', '2024-02-01 00:00'],
    ['file', '2024-02-29 23:59'], // leap day: still February
    ['file', '2024-03-01 00:00'],
  )
  assert.equal(kept(months, { keepAllWithin: '1d', keepMonthly: 2 }), [30, 40])
  assert.equal(kept(months, { keepAllWithin: '1d', keepMonthly: 4 }), [0, 10, 30, 40])
})

test('each rule counts on its own: one version may serve several, none steals from another', () => {
  const versions = history(
    ['file', '2024-03-01 08:00'],
    ['file', '2024-03-17 09:00'],
    ['file', '2024-03-18 10:00'],
    ['file', '2024-03-18 11:00'],
    ['file', '2024-03-19 12:00'],
  )
  const policy = { keepAllWithin: '1d', keepHourly: 1, keepDaily: 2, keepMonthly: 2 }
  // Hourly: 11:00 on the 18th. Daily: the 18th (11:00) and the 17th. Monthly: March's newest
  // older version (11:00 on the 18th again) and nothing in February: a month without
  // versions is not counted, so March 1st is not kept.
  assert.equal(kept(versions, policy), [10, 30, 40])
  assert.equal(kept(versions, { ...policy, keepWeekly: 3 }), [0, 10, 30, 40])
})

test('beyond the maximum age only the current and pinned versions stay', () => {
  const versions = history(
    ['file', '2023-01-15 00:00'], // pinned by a recovery point at length 5
    ['file', '2023-06-15 00:00'],
    ['file', '2024-02-20 00:00'],
    ['file', '2024-03-10 00:00'],
    ['file', '2024-03-19 00:00'],
  )
  const policy = { keepAllWithin: '1d', keepMonthly: 24, maxAge: '30d' }
  assert.equal(kept(versions, policy), [20, 30, 40])
  assert.equal(kept(versions, policy, [5]), [0, 20, 30, 40])
  const maxAgeBoundary = history(['file', NOW_MS - 30 * DAY_MS], ['file', NOW_MS])
  assert.equal(kept(maxAgeBoundary, { keepAllWithin: 0, keepDaily: 9, maxAge: '30d' }), [0, 10])
  assert.equal(
    kept(maxAgeBoundary, { keepAllWithin: 0, keepDaily: 9, maxAge: 30 * DAY_MS - 1 }),
    [10],
  )
})

test('recovery points pin the version live at their length, and only file versions', () => {
  const versions = history(
    ['file', '2020-01-01 00:00'], // seq 0
    ['file', '2020-01-02 00:00'], // seq 10
    ['deleted', '2020-01-03 00:00'], // seq 20
    ['file', '2020-01-04 00:00'], // seq 30
    ['directory', '2020-01-05 00:00'], // seq 40: the path became a directory
    ['file', '2020-01-06 00:00'], // seq 50
    ['symlink', '2020-01-07 00:00'], // seq 60: now a link, so no current file version
  )
  const policy = { keepAllWithin: 0 }
  assert.equal(kept(versions, policy, [0]), [], 'a point before the path existed')
  assert.equal(kept(versions, policy, [1]), [0], 'length 1 includes seq 0')
  assert.equal(kept(versions, policy, [10]), [0], 'length 10 excludes seq 10')
  assert.equal(kept(versions, policy, [11]), [10])
  assert.equal(kept(versions, policy, [25]), [], 'a point where the path was deleted')
  assert.equal(kept(versions, policy, [45]), [], 'a point where it was a directory')
  assert.equal(kept(versions, policy, [5, 15, 35, 55, 1000]), [0, 10, 30, 50])
  assert.equal(kept(versions, { keepAllWithin: 0, maxAge: 0 }, [11, 11, 31]), [10, 30])
  assert.throws(() => kept(versions, policy, [31, 11]), /ascending/)
})

test('directories, links and deletes are never in the keep set', () => {
  const versions = history(
    ['directory', NOW_MS - 10],
    ['symlink', NOW_MS - 5],
    ['deleted', NOW_MS - 1],
  )
  assert.equal(kept(versions, { keepAllWithin: '1d', keepHourly: 5 }, [1, 11, 21, 31]), [])
})

/** The same rules said another way: for each rule, the newest version of each of the top buckets. */
function oracle(
  versions: readonly VersionFacts[],
  pinnedLengths: readonly number[],
  input: RetentionPolicyInput,
  nowMs: number,
): number[] {
  const policy = retentionPolicy(input)
  const files = versions.filter((version) => version.kind === 'file')
  const keep = new Set<LogSeq>()
  const last = versions.at(-1)
  if (last?.kind === 'file') keep.add(last.seq)
  for (const length of pinnedLengths) {
    const live = versions.filter((version) => version.seq < length).at(-1)
    if (live?.kind === 'file') keep.add(live.seq)
  }
  const windowStart = nowMs - policy.keepAllWithinMs
  for (const file of files) if (file.recordedAtMs >= windowStart) keep.add(file.seq)
  const older = files.filter(
    (file) =>
      file.recordedAtMs < windowStart &&
      (policy.maxAgeMs === null || file.recordedAtMs >= nowMs - policy.maxAgeMs),
  )
  const calendar: [number, (date: Date) => string][] = [
    [policy.keepHourly, (date) => date.toISOString().slice(0, 13)],
    [policy.keepDaily, (date) => date.toISOString().slice(0, 10)],
    [policy.keepWeekly, (date) => isoWeek(date)],
    [policy.keepMonthly, (date) => date.toISOString().slice(0, 7)],
  ]
  for (const [count, bucketName] of calendar) {
    const newestInBucket = new Map<string, VersionFacts>()
    for (const file of older) newestInBucket.set(bucketName(new Date(file.recordedAtMs)), file)
    const newestFirst = [...newestInBucket.values()].sort((a, b) => b.seq - a.seq)
    for (const file of newestFirst.slice(0, count)) keep.add(file.seq)
  }
  return [...keep].sort((a, b) => a - b)
}

/** 'YYYY-Www' of the ISO week holding `date`, from its Thursday (the ISO rule). */
function isoWeek(date: Date): string {
  const thursday = new Date(date.getTime())
  thursday.setUTCDate(date.getUTCDate() + 3 - ((date.getUTCDay() + 6) % 7))
  const yearStart = Date.UTC(thursday.getUTCFullYear(), 0, 1)
  const week = Math.floor((thursday.getTime() - yearStart) / (7 * DAY_MS)) + 1
  return `${thursday.getUTCFullYear()}-W${week}`
}

test('seeded random histories agree with the set-based statement of the rules', () => {
  const random = new SeededRandom(20240320)
  const kinds: VersionFacts['kind'][] = ['file', 'file', 'file', 'deleted', 'directory', 'symlink']
  const steps = [60_000, HOUR_MS / 2, 3 * HOUR_MS, DAY_MS, 5 * DAY_MS, 40 * DAY_MS]
  for (let round = 0; round < 2000; round++) {
    const versions: VersionFacts[] = []
    let timeMs = NOW_MS - random.between(1, 400) * DAY_MS
    let seq = random.between(0, 5)
    const count = random.between(0, 60)
    for (let index = 0; index < count; index++) {
      // Record times never go back in a log, and several records may share a millisecond.
      timeMs += random.chance(0.1) ? 0 : random.between(1, steps[random.nextInt(steps.length)]!)
      versions.push({
        kind: kinds[random.nextInt(kinds.length)]!,
        seq: logSeq(seq),
        recordedAtMs: timeMs,
      })
      seq += random.between(1, 4)
    }
    const pinned = Array.from({ length: random.between(0, 4) }, () => random.between(0, seq + 2))
    pinned.sort((a, b) => a - b)
    const input: RetentionPolicyInput = {
      keepAllWithin: random.between(0, 3) * DAY_MS,
      keepHourly: random.between(0, 30),
      keepDaily: random.between(0, 10),
      keepWeekly: random.between(0, 6),
      keepMonthly: random.between(0, 12),
      maxAge: random.chance(0.5) ? null : random.between(3, 500) * DAY_MS,
    }
    if (input.maxAge !== null && (input.maxAge as number) < (input.keepAllWithin as number))
      continue
    assert.equal(
      kept(versions, input, pinned),
      oracle(versions, pinned, input, NOW_MS),
      `round ${round}`,
    )
  }
})

test.run()
