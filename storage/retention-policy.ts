// A dataset's retention policy as a validated value: every version recorded within a
// window is kept, older ones are thinned to hourly, daily, weekly and monthly points
// (restic's `forget --keep-*`, per path), and an optional maximum age ends everything
// but pinned versions. Policies come from users and from the topology, so nonsense is a
// one-line BAD_ARGUMENT, and a stored policy is checked again when it is read back.
import { ClusterError } from '../consensus/cluster-error.ts'
import type { LevelDatabase } from './version-index.ts'

/** Points of one kind a policy may ask for (ten years of hours is far below it). */
export const RETENTION_COUNT_MAX = 1_000_000
/** Longest duration a policy may name: a hundred years, so that `now - duration` stays safe. */
export const RETENTION_DURATION_MS_MAX = 100 * 366 * 24 * 3600 * 1000

/** A duration: milliseconds, or text such as '24h', '90m', '7d', '2w', '1d12h'. */
export type Duration = number | string

/** What a user or a topology command writes; absent counts are zero, absent maxAge is none. */
export interface RetentionPolicyInput {
  readonly keepAllWithin: Duration
  readonly keepHourly?: number
  readonly keepDaily?: number
  readonly keepWeekly?: number
  readonly keepMonthly?: number
  readonly maxAge?: Duration | null
}

export interface RetentionPolicyFields {
  /** Every version recorded this recently is kept. */
  readonly keepAllWithinMs: number
  /** Older versions: the newest one in each of this many most recent hours that have one. */
  readonly keepHourly: number
  readonly keepDaily: number
  /** Weeks run from Monday 00:00 UTC (ISO weeks). */
  readonly keepWeekly: number
  readonly keepMonthly: number
  /** Beyond this age only pinned versions (recovery points, current versions) are kept. */
  readonly maxAgeMs: number | null
}

/** Only retentionPolicy() makes one, so holding one means it was checked. */
export type RetentionPolicy = RetentionPolicyFields & { readonly __brand: 'RetentionPolicy' }

const COUNT_FIELDS = ['keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly'] as const
const KNOWN_FIELDS = new Set<string>(['keepAllWithin', 'maxAge', ...COUNT_FIELDS])

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
}
const DURATION_PATTERN = /^(?:\d+(?:ms|s|m|h|d|w))+$/
const DURATION_PART = /(\d+)(ms|s|m|h|d|w)/g

/** Checks a policy; BAD_ARGUMENT names the first thing wrong with it. */
export function retentionPolicy(input: RetentionPolicyInput): RetentionPolicy {
  if (typeof input !== 'object' || input === null)
    throw ClusterError.badArgument('a retention policy is an object')
  for (const field of Object.keys(input))
    if (!KNOWN_FIELDS.has(field))
      throw ClusterError.badArgument(`unknown retention policy field ${JSON.stringify(field)}`)
  const keepAllWithinMs = durationMs(input.keepAllWithin, 'keepAllWithin')
  const maxAgeMs =
    input.maxAge === undefined || input.maxAge === null ? null : durationMs(input.maxAge, 'maxAge')
  if (maxAgeMs !== null && maxAgeMs < keepAllWithinMs)
    throw ClusterError.badArgument(
      `retention maxAge (${maxAgeMs} ms) is shorter than keepAllWithin (${keepAllWithinMs} ms)`,
    )
  const counts = Object.fromEntries(
    COUNT_FIELDS.map((field) => [field, count(input[field], field)]),
  ) as Record<(typeof COUNT_FIELDS)[number], number>
  return { keepAllWithinMs, ...counts, maxAgeMs } as RetentionPolicy
}

/** Milliseconds in a duration; BAD_ARGUMENT when it is not one. */
export function durationMs(value: Duration, field: string): number {
  let total: number
  if (typeof value === 'number') total = value
  else if (typeof value === 'string' && DURATION_PATTERN.test(value)) {
    total = 0
    for (const [, amount, unit] of value.matchAll(DURATION_PART))
      total += Number(amount) * UNIT_MS[unit!]!
  } else
    throw ClusterError.badArgument(
      `retention ${field} ${JSON.stringify(value)} is not a duration (say '24h', '7d' or milliseconds)`,
    )
  if (!(Number.isSafeInteger(total) && total >= 0 && total <= RETENTION_DURATION_MS_MAX))
    throw ClusterError.badArgument(
      `retention ${field} ${JSON.stringify(value)} must be 0 to ${RETENTION_DURATION_MS_MAX} ms`,
    )
  return total
}

function count(value: number | undefined, field: string): number {
  if (value === undefined) return 0
  if (!(Number.isSafeInteger(value) && value >= 0 && value <= RETENTION_COUNT_MAX))
    throw ClusterError.badArgument(
      `retention ${field} must be a whole number from 0 to ${RETENTION_COUNT_MAX}, not ${JSON.stringify(value)}`,
    )
  return value
}

/** The stored form: the fields in milliseconds, as JSON. */
export function encodeRetentionPolicy(policy: RetentionPolicy): string {
  const { keepAllWithinMs, maxAgeMs, ...counts } = policy
  return JSON.stringify({ keepAllWithin: keepAllWithinMs, maxAge: maxAgeMs, ...counts })
}

/** Reads a stored policy back; CORRUPT_STORE when it is damaged. */
export function decodeRetentionPolicy(text: string, where: string): RetentionPolicy {
  try {
    return retentionPolicy(JSON.parse(text) as RetentionPolicyInput)
  } catch (error) {
    throw ClusterError.corruptStore(
      `the retention policy of ${where} is damaged: set it again (${(error as Error).message})`,
      error,
    )
  }
}

const POLICY_KEY = 'policy'

/** Stores a dataset's policy (null: none, every version is kept), synced. */
export async function saveRetentionPolicy(
  settings: LevelDatabase,
  policy: RetentionPolicy | null,
): Promise<void> {
  // Synced (a classic-level option the abstract type lacks): the next prune obeys it.
  const sync = { sync: true } as object
  if (policy === null) await settings.del(POLICY_KEY, sync)
  else await settings.put(POLICY_KEY, encodeRetentionPolicy(policy), sync)
}

export async function loadRetentionPolicy(
  settings: LevelDatabase,
  where: string,
): Promise<RetentionPolicy | null> {
  const text = await settings.get(POLICY_KEY)
  return text === undefined ? null : decodeRetentionPolicy(text, where)
}
