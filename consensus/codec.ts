// The binary form of the Raft vocabulary, used by the wire protocol and the log store.
// Every encoding starts with a format version byte. Decoders check lengths before reading,
// refuse unknown types, over-limit counts and trailing bytes, validate the decoded value
// (message-validation.ts), and return `{ ok: false, error }` for any input: they never throw.
import { assert } from './assert.ts'
import { ByteReader, ByteWriter, DecodeFailure } from './byte-codec.ts'
import {
  ENTRIES_PER_MESSAGE_MAX,
  MEMBERSHIP_NODES_MAX,
  MESSAGE_BYTES_MAX,
  NODE_ID_BYTES_MAX,
  SNAPSHOT_DATA_BYTES_MAX,
} from './limits.ts'
import {
  configChangeProblem,
  entryProblem,
  hardStateProblem,
  messageProblem,
  snapshotMetaProblem,
} from './message-validation.ts'
import type {
  ConfigChange,
  Entry,
  EntryKind,
  HardState,
  Membership,
  Message,
  MessageType,
  NodeId,
  Snapshot,
  TransferAuthority,
} from './types.ts'
import { logIndex, nodeId, term } from './types.ts'

export { ENTRIES_PER_MESSAGE_MAX, MESSAGE_BYTES_MAX, NODE_ID_BYTES_MAX } from './limits.ts'

export type DecodeResult<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string }

const FORMAT_VERSION = 1
/** Term, index, kind and data length: the least an entry takes. */
const ENTRY_BYTES_MIN = 8 + 8 + 1 + 4
/** Length prefix and one byte. */
const NODE_ID_ENCODED_BYTES_MIN = 2 + 1

const MESSAGE_TYPES: readonly MessageType[] = [
  'preVote',
  'preVoteResponse',
  'vote',
  'voteResponse',
  'append',
  'appendResponse',
  'heartbeat',
  'heartbeatResponse',
  'snapshot',
  'timeoutNow',
]
const ENTRY_KINDS: readonly EntryKind[] = ['command', 'config', 'noop']
const CONFIG_CHANGE_TYPES: readonly ConfigChange['type'][] = ['addVoter', 'addLearner', 'remove']

function codeOf<T>(values: readonly T[], value: T): number {
  const code = values.indexOf(value)
  assert(code >= 0, `no code for ${String(value)}`)
  return code + 1
}

function valueOf<T>(values: readonly T[], code: number, what: string): T {
  const value = values[code - 1]
  if (value === undefined) throw new DecodeFailure(`unknown ${what} ${code}`)
  return value
}

function encodeWith(write: (writer: ByteWriter) => void): Uint8Array {
  const writer = new ByteWriter()
  writer.u8(FORMAT_VERSION)
  write(writer)
  const bytes = writer.finish()
  assert(
    bytes.length <= MESSAGE_BYTES_MAX,
    `an encoding of ${bytes.length} bytes is over MESSAGE_BYTES_MAX`,
  )
  return bytes
}

function decodeWith<T>(
  bytes: Uint8Array,
  read: (reader: ByteReader) => T,
  problemOf: (value: T) => string | null,
): DecodeResult<T> {
  if (!(bytes instanceof Uint8Array)) return { ok: false, error: 'input is not bytes' }
  if (bytes.length > MESSAGE_BYTES_MAX)
    return {
      ok: false,
      error: `${bytes.length} bytes is over MESSAGE_BYTES_MAX (${MESSAGE_BYTES_MAX})`,
    }
  try {
    const reader = new ByteReader(bytes)
    const version = reader.u8('format version')
    if (version !== FORMAT_VERSION) return { ok: false, error: `unknown format version ${version}` }
    const value = read(reader)
    reader.end()
    const problem = problemOf(value)
    return problem === null ? { ok: true, value } : { ok: false, error: `bad field: ${problem}` }
  } catch (error) {
    if (error instanceof DecodeFailure) return { ok: false, error: error.message }
    throw error
  }
}

const readNodeId = (reader: ByteReader, field: string): NodeId =>
  nodeId(reader.string(field, NODE_ID_BYTES_MAX))

function writeEntry(writer: ByteWriter, entry: Entry): void {
  writer.u64(entry.term)
  writer.u64(entry.index)
  writer.u8(codeOf(ENTRY_KINDS, entry.kind))
  writer.bytes(entry.data)
}

function readEntry(reader: ByteReader): Entry {
  return {
    term: term(reader.u64('entry term')),
    index: logIndex(reader.u64('entry index')),
    kind: valueOf(ENTRY_KINDS, reader.u8('entry kind'), 'entry kind'),
    data: reader.bytes('entry data', MESSAGE_BYTES_MAX),
  }
}

function writeNodeIds(writer: ByteWriter, nodes: readonly NodeId[]): void {
  writer.u32(nodes.length)
  for (const node of nodes) writer.string(node)
}

function readNodeIds(reader: ByteReader, field: string): NodeId[] {
  const count = reader.count(field, MEMBERSHIP_NODES_MAX, NODE_ID_ENCODED_BYTES_MIN)
  return Array.from({ length: count }, () => readNodeId(reader, field))
}

function writeSnapshot(writer: ByteWriter, snapshot: Snapshot): void {
  writer.u64(snapshot.meta.index)
  writer.u64(snapshot.meta.term)
  writeNodeIds(writer, snapshot.meta.membership.voters)
  writeNodeIds(writer, snapshot.meta.membership.learners)
  writer.bytes(snapshot.data)
}

function readSnapshot(reader: ByteReader): Snapshot {
  const index = logIndex(reader.u64('snapshot index'))
  const snapshotTerm = term(reader.u64('snapshot term'))
  const membership: Membership = {
    voters: readNodeIds(reader, 'voters'),
    learners: readNodeIds(reader, 'learners'),
  }
  const data = reader.bytes('snapshot data', SNAPSHOT_DATA_BYTES_MAX)
  return { meta: { index, term: snapshotTerm, membership }, data }
}

function writeMessageBody(writer: ByteWriter, message: Message): void {
  switch (message.type) {
    case 'preVote':
    case 'vote':
      writer.u64(message.lastLogIndex)
      writer.u64(message.lastLogTerm)
      writer.boolean(message.transfer !== null)
      if (message.transfer !== null) {
        writer.string(message.transfer.leader)
        writer.u64(message.transfer.term)
      }
      return
    case 'preVoteResponse':
    case 'voteResponse':
      return writer.boolean(message.granted)
    case 'append':
      writer.u64(message.prevLogIndex)
      writer.u64(message.prevLogTerm)
      writer.u64(message.commit)
      writer.u64(message.sentTick)
      writer.u32(message.entries.length)
      for (const entry of message.entries) writeEntry(writer, entry)
      return
    case 'appendResponse':
      writer.boolean(message.success)
      writer.u64(message.index)
      writer.u64(message.hintIndex)
      writer.u64(message.hintTerm)
      writer.u64(message.sentTick)
      return
    case 'heartbeat':
      writer.u64(message.commit)
      writer.u64(message.sentTick)
      return
    case 'heartbeatResponse':
      return writer.u64(message.sentTick)
    case 'snapshot':
      writer.u64(message.sentTick)
      return writeSnapshot(writer, message.snapshot)
    case 'timeoutNow':
      return
  }
}

function readMessage(reader: ByteReader): Message {
  const type = valueOf(MESSAGE_TYPES, reader.u8('message type'), 'message type')
  const from = readNodeId(reader, 'from')
  const to = readNodeId(reader, 'to')
  const messageTerm = term(reader.u64('term'))
  const base = { from, to, term: messageTerm }
  switch (type) {
    case 'preVote':
    case 'vote': {
      const lastLogIndex = logIndex(reader.u64('lastLogIndex'))
      const lastLogTerm = term(reader.u64('lastLogTerm'))
      let transfer: TransferAuthority | null = null
      if (reader.boolean('transfer flag')) {
        transfer = {
          leader: readNodeId(reader, 'transfer leader'),
          term: term(reader.u64('transfer term')),
        }
      }
      return { ...base, type, lastLogIndex, lastLogTerm, transfer }
    }
    case 'preVoteResponse':
    case 'voteResponse':
      return { ...base, type, granted: reader.boolean('granted') }
    case 'append': {
      const prevLogIndex = logIndex(reader.u64('prevLogIndex'))
      const prevLogTerm = term(reader.u64('prevLogTerm'))
      const commit = logIndex(reader.u64('commit'))
      const sentTick = reader.u64('sentTick')
      const count = reader.count('entries', ENTRIES_PER_MESSAGE_MAX, ENTRY_BYTES_MIN)
      const entries = Array.from({ length: count }, () => readEntry(reader))
      return { ...base, type, prevLogIndex, prevLogTerm, entries, commit, sentTick }
    }
    case 'appendResponse':
      return {
        ...base,
        type,
        success: reader.boolean('success'),
        index: logIndex(reader.u64('index')),
        hintIndex: logIndex(reader.u64('hintIndex')),
        hintTerm: term(reader.u64('hintTerm')),
        sentTick: reader.u64('sentTick'),
      }
    case 'heartbeat':
      return {
        ...base,
        type,
        commit: logIndex(reader.u64('commit')),
        sentTick: reader.u64('sentTick'),
      }
    case 'heartbeatResponse':
      return { ...base, type, sentTick: reader.u64('sentTick') }
    case 'snapshot': {
      const sentTick = reader.u64('sentTick')
      return { ...base, type, sentTick, snapshot: readSnapshot(reader) }
    }
    case 'timeoutNow':
      return { ...base, type }
  }
}

export function encodeMessage(message: Message): Uint8Array {
  return encodeWith((writer) => {
    writer.u8(codeOf(MESSAGE_TYPES, message.type))
    writer.string(message.from)
    writer.string(message.to)
    writer.u64(message.term)
    writeMessageBody(writer, message)
  })
}

export function decodeMessage(bytes: Uint8Array): DecodeResult<Message> {
  return decodeWith(bytes, readMessage, messageProblem)
}

export function encodeEntry(entry: Entry): Uint8Array {
  return encodeWith((writer) => writeEntry(writer, entry))
}

export function decodeEntry(bytes: Uint8Array): DecodeResult<Entry> {
  return decodeWith(bytes, readEntry, entryProblem)
}

export function encodeSnapshot(snapshot: Snapshot): Uint8Array {
  return encodeWith((writer) => writeSnapshot(writer, snapshot))
}

export function decodeSnapshot(bytes: Uint8Array): DecodeResult<Snapshot> {
  return decodeWith(bytes, readSnapshot, (snapshot) => snapshotMetaProblem(snapshot.meta))
}

export function encodeHardState(hardState: HardState): Uint8Array {
  return encodeWith((writer) => {
    writer.u64(hardState.term)
    writer.boolean(hardState.vote !== null)
    if (hardState.vote !== null) writer.string(hardState.vote)
    writer.u64(hardState.commit)
  })
}

export function decodeHardState(bytes: Uint8Array): DecodeResult<HardState> {
  return decodeWith(
    bytes,
    (reader) => {
      const hardStateTerm = term(reader.u64('term'))
      const vote = reader.boolean('vote flag') ? readNodeId(reader, 'vote') : null
      return { term: hardStateTerm, vote, commit: logIndex(reader.u64('commit')) }
    },
    hardStateProblem,
  )
}

export function encodeConfigChange(change: ConfigChange): Uint8Array {
  return encodeWith((writer) => {
    writer.u8(codeOf(CONFIG_CHANGE_TYPES, change.type))
    writer.string(change.node)
  })
}

export function decodeConfigChange(bytes: Uint8Array): DecodeResult<ConfigChange> {
  return decodeWith(
    bytes,
    (reader): ConfigChange => ({
      type: valueOf(CONFIG_CHANGE_TYPES, reader.u8('config change type'), 'config change type'),
      node: readNodeId(reader, 'node'),
    }),
    configChangeProblem,
  )
}
