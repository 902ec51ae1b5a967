// Semantic checks of what peers send (and what storage hands back): used by the codec after
// decoding, and by RaftCore.step for messages that arrive already decoded (the simulator).
// Each returns null when the value is valid, else one line saying what is wrong.
import { ENTRIES_PER_MESSAGE_MAX, MEMBERSHIP_NODES_MAX, SNAPSHOT_DATA_BYTES_MAX } from './limits.ts'
import { nodeIdProblem } from './node-id.ts'
import type { ConfigChange, Entry, HardState, Membership, Message, SnapshotMeta } from './types.ts'

const ENTRY_KINDS: ReadonlySet<string> = new Set(['command', 'config', 'noop'])
const CONFIG_CHANGE_TYPES: ReadonlySet<string> = new Set(['addVoter', 'addLearner', 'remove'])

const isNumber = (value: number): boolean => Number.isSafeInteger(value) && value >= 0

/** The first of the named numbers that is not a non-negative safe integer. */
function badNumber(fields: Record<string, number>): string | null {
  for (const [name, value] of Object.entries(fields)) {
    if (!isNumber(value)) return `${name} ${value} is not a non-negative integer`
  }
  return null
}

export function membershipProblem(membership: Membership): string | null {
  const total = membership.voters.length + membership.learners.length
  if (total > MEMBERSHIP_NODES_MAX)
    return `membership of ${total} nodes is over ${MEMBERSHIP_NODES_MAX}`
  const seen = new Set<string>()
  for (const node of [...membership.voters, ...membership.learners]) {
    const problem = nodeIdProblem(node)
    if (problem !== null) return `membership: ${problem}`
    if (seen.has(node)) return `membership lists node ${node} twice`
    seen.add(node)
  }
  return null
}

export function snapshotMetaProblem(meta: SnapshotMeta): string | null {
  return (
    badNumber({ 'snapshot index': meta.index, 'snapshot term': meta.term }) ??
    membershipProblem(meta.membership)
  )
}

export function entryProblem(entry: Entry): string | null {
  const number = badNumber({ 'entry term': entry.term, 'entry index': entry.index })
  if (number !== null) return number
  if (entry.index === 0) return 'entry index 0 (the log starts at 1)'
  if (!ENTRY_KINDS.has(entry.kind)) return `unknown entry kind ${String(entry.kind)}`
  if (!(entry.data instanceof Uint8Array)) return 'entry data is not bytes'
  return null
}

export function hardStateProblem(hardState: HardState): string | null {
  const number = badNumber({ term: hardState.term, commit: hardState.commit })
  if (number !== null) return `hard state: ${number}`
  if (hardState.vote !== null) {
    const problem = nodeIdProblem(hardState.vote)
    if (problem !== null) return `hard state vote: ${problem}`
  }
  return null
}

export function configChangeProblem(change: ConfigChange): string | null {
  if (!CONFIG_CHANGE_TYPES.has(change.type)) return `unknown config change ${String(change.type)}`
  const problem = nodeIdProblem(change.node)
  return problem === null ? null : `config change: ${problem}`
}

/** Entries of an append follow prevLogIndex one by one, with terms that never go down nor pass the message's. */
function appendEntriesProblem(message: Extract<Message, { type: 'append' }>): string | null {
  if (message.entries.length > ENTRIES_PER_MESSAGE_MAX)
    return `${message.entries.length} entries is over ${ENTRIES_PER_MESSAGE_MAX}`
  let previousTerm: number = message.prevLogTerm
  for (const [position, entry] of message.entries.entries()) {
    const problem = entryProblem(entry)
    if (problem !== null) return problem
    if (entry.index !== message.prevLogIndex + 1 + position)
      return `entry index ${entry.index} does not follow ${message.prevLogIndex + position}`
    if (entry.term < previousTerm || entry.term > message.term)
      return `entry ${entry.index} has term ${entry.term} outside [${previousTerm}, ${message.term}]`
    previousTerm = entry.term
  }
  return null
}

export function messageProblem(message: Message): string | null {
  const ids = nodeIdProblem(message.from) ?? nodeIdProblem(message.to)
  if (ids !== null) return ids
  if (message.from === message.to) return `message from ${message.from} to itself`
  const termProblem = badNumber({ term: message.term })
  if (termProblem !== null) return termProblem
  switch (message.type) {
    case 'preVote':
    case 'vote': {
      const number = badNumber({
        lastLogIndex: message.lastLogIndex,
        lastLogTerm: message.lastLogTerm,
      })
      if (number !== null) return number
      if (message.term === 0) return `${message.type} at term 0`
      if (message.transfer === null) return null
      const transfer =
        nodeIdProblem(message.transfer.leader) ??
        badNumber({ 'transfer term': message.transfer.term })
      if (transfer !== null) return transfer
      return message.transfer.term < message.term
        ? null
        : 'transfer term is not below the vote term'
    }
    case 'preVoteResponse':
    case 'voteResponse':
      return typeof message.granted === 'boolean' ? null : 'granted is not a boolean'
    case 'append':
      return (
        badNumber({
          prevLogIndex: message.prevLogIndex,
          prevLogTerm: message.prevLogTerm,
          commit: message.commit,
          sentTick: message.sentTick,
        }) ??
        (message.prevLogTerm > message.term ? 'prevLogTerm is above the term' : null) ??
        appendEntriesProblem(message)
      )
    case 'appendResponse':
      return (
        badNumber({
          index: message.index,
          hintIndex: message.hintIndex,
          hintTerm: message.hintTerm,
          sentTick: message.sentTick,
        }) ??
        (typeof message.success !== 'boolean' ? 'success is not a boolean' : null) ??
        (!message.success && message.hintIndex > message.index ? 'hintIndex is above index' : null)
      )
    case 'heartbeat':
      return badNumber({ commit: message.commit, sentTick: message.sentTick })
    case 'heartbeatResponse':
      return badNumber({ sentTick: message.sentTick })
    case 'snapshot': {
      const { meta, data } = message.snapshot
      const problem = badNumber({ sentTick: message.sentTick }) ?? snapshotMetaProblem(meta)
      if (problem !== null) return problem
      if (meta.term > message.term) return 'snapshot term is above the message term'
      if (!(data instanceof Uint8Array) || data.length > SNAPSHOT_DATA_BYTES_MAX)
        return `snapshot data is not bytes of at most ${SNAPSHOT_DATA_BYTES_MAX}`
      return null
    }
    case 'timeoutNow':
      return null
    default:
      return `unknown message type ${String((message as { type: unknown }).type)}`
  }
}
