// What a RaftCore is configured with, its defaults and its validation. The driver may call
// validateRaftOptions() on user configuration first; the core asserts it, because by the
// time options reach the core a bad value is a programmer error.
import { leaseTicksFor } from './lease.ts'
import { ENTRIES_PER_MESSAGE_MAX, INFLIGHT_APPENDS_MAX, MESSAGE_BYTES_MAX } from './limits.ts'
import { nodeIdProblem } from './node-id.ts'
import type { NodeId, PlantedBug, Random } from './types.ts'

export interface RaftOptions {
  readonly id: NodeId
  /** E, the base election timeout; each timeout is drawn in [E, 2E). */
  readonly electionTicks: number
  /** At least 1 and below electionTicks. */
  readonly heartbeatTicks: number
  /** d in [0, 0.5): the largest relative rate error of any node's clock. */
  readonly clockDriftBound: number
  /** False: this voter only votes, never campaigns. */
  readonly canCampaign: boolean
  readonly maxEntriesPerAppend: number
  readonly maxBytesPerAppend: number
  readonly maxInflightAppends: number
  readonly maxUncommittedEntries: number
  readonly maxEntryBytes: number
  readonly random: Random
  /** Tests only: plants a known Raft bug (see PlantedBug). */
  readonly plantedBug?: PlantedBug
}

export const DEFAULT_RAFT_LIMITS: Omit<
  RaftOptions,
  'id' | 'random' | 'canCampaign' | 'plantedBug'
> = {
  electionTicks: 10,
  heartbeatTicks: 1,
  clockDriftBound: 0.1,
  maxEntriesPerAppend: 256,
  maxBytesPerAppend: 1024 * 1024,
  maxInflightAppends: 64,
  maxUncommittedEntries: 1024,
  maxEntryBytes: 256 * 1024,
}

const isCount = (value: number, min: number, max: number): boolean =>
  Number.isSafeInteger(value) && value >= min && value <= max

/** Null when the options are usable, else the first problem found, in one line. */
export function validateRaftOptions(options: RaftOptions): string | null {
  const idProblem = nodeIdProblem(options.id)
  if (idProblem !== null) return `id: ${idProblem}`
  if (!isCount(options.electionTicks, 2, 1_000_000)) return 'electionTicks must be an integer >= 2'
  if (!isCount(options.heartbeatTicks, 1, options.electionTicks - 1))
    return 'heartbeatTicks must be an integer >= 1 and below electionTicks'
  if (!(options.clockDriftBound >= 0 && options.clockDriftBound < 0.5))
    return 'clockDriftBound must be in [0, 0.5)'
  if (leaseTicksFor(options) < 1)
    return `electionTicks ${options.electionTicks} is too small for clockDriftBound ${options.clockDriftBound}: the lease would be under one tick`
  if (!isCount(options.maxEntriesPerAppend, 1, ENTRIES_PER_MESSAGE_MAX))
    return `maxEntriesPerAppend must be in [1, ${ENTRIES_PER_MESSAGE_MAX}]`
  if (!isCount(options.maxBytesPerAppend, 1, MESSAGE_BYTES_MAX / 2))
    return `maxBytesPerAppend must be in [1, ${MESSAGE_BYTES_MAX / 2}]`
  if (!isCount(options.maxInflightAppends, 1, INFLIGHT_APPENDS_MAX))
    return `maxInflightAppends must be in [1, ${INFLIGHT_APPENDS_MAX}]`
  if (!isCount(options.maxUncommittedEntries, 1, Number.MAX_SAFE_INTEGER))
    return 'maxUncommittedEntries must be a positive integer'
  if (!isCount(options.maxEntryBytes, 1, options.maxBytesPerAppend))
    return 'maxEntryBytes must be in [1, maxBytesPerAppend]'
  return null
}
