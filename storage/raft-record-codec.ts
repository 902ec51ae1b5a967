// Key layout and record framing of the Raft log store.
//
// Keys: one prefix byte, and for entries the index as 8 big-endian bytes, so that LevelDB's
// byte order is index order. Records: a format version byte, a record type byte, the fields,
// and a CRC-32 of everything before it. The type byte means a record that ends up under the
// wrong kind of key is caught, not misread. Decoding checks syntax only (framing, checksum,
// lengths); whether the log makes sense as a whole is checked by the store.
import { crc32 } from 'node:zlib'
import { assert } from '../consensus/assert.ts'
import { ClusterError } from '../consensus/cluster-error.ts'
import type {
  Entry,
  EntryKind,
  HardState,
  LogIndex,
  NodeId,
  Snapshot,
  Term,
} from '../consensus/types.ts'

export const RECORD_FORMAT_VERSION = 1

const KEY_PREFIX_DAMAGE_NOTE = 0x21 // '!': sorts first, so load() meets it first
const KEY_PREFIX_ENTRY = 0x65 // 'e'
const KEY_PREFIX_HARD_STATE = 0x68 // 'h'
const KEY_PREFIX_SNAPSHOT = 0x73 // 's'
const ENTRY_KEY_BYTES = 9

const RECORD_TYPE_HARD_STATE = 1
const RECORD_TYPE_SNAPSHOT = 2
const RECORD_TYPE_ENTRY = 3
const RECORD_TYPE_DAMAGE_NOTE = 4

const HEADER_BYTES = 2
const CHECKSUM_BYTES = 4
const UINT32_LIMIT = 2 ** 32
/** Node ids are stored with a 16-bit length. */
export const NODE_ID_BYTES_MAX = 0xffff
/** Member lists are stored with a 16-bit count. */
export const MEMBERS_MAX = 0xffff

const ENTRY_KINDS: readonly EntryKind[] = ['command', 'config', 'noop']

export const HARD_STATE_KEY = Uint8Array.of(KEY_PREFIX_HARD_STATE)
export const SNAPSHOT_KEY = Uint8Array.of(KEY_PREFIX_SNAPSHOT)
/** Where the store notes damage that LevelDB skipped over, so that every later load reports it. */
export const DAMAGE_NOTE_KEY = Uint8Array.of(KEY_PREFIX_DAMAGE_NOTE)

export function entryKey(index: LogIndex): Uint8Array {
  assert(Number.isSafeInteger(index) && index >= 0, `entry key for index ${index}`)
  const key = new Uint8Array(ENTRY_KEY_BYTES)
  const view = new DataView(key.buffer)
  view.setUint8(0, KEY_PREFIX_ENTRY)
  view.setUint32(1, Math.floor(index / UINT32_LIMIT))
  view.setUint32(5, index >>> 0)
  return key
}

export type ParsedKey =
  | { readonly kind: 'hardState' }
  | { readonly kind: 'snapshot' }
  | { readonly kind: 'entry'; readonly index: LogIndex }
  | { readonly kind: 'damageNote' }
  | { readonly kind: 'unknown' }

export function parseKey(key: Uint8Array): ParsedKey {
  if (key.length === 1 && key[0] === KEY_PREFIX_HARD_STATE) return { kind: 'hardState' }
  if (key.length === 1 && key[0] === KEY_PREFIX_SNAPSHOT) return { kind: 'snapshot' }
  if (key.length === 1 && key[0] === KEY_PREFIX_DAMAGE_NOTE) return { kind: 'damageNote' }
  if (key.length === ENTRY_KEY_BYTES && key[0] === KEY_PREFIX_ENTRY) {
    const view = new DataView(key.buffer, key.byteOffset, key.byteLength)
    const index = view.getUint32(1) * UINT32_LIMIT + view.getUint32(5)
    if (Number.isSafeInteger(index)) return { kind: 'entry', index: index as LogIndex }
  }
  return { kind: 'unknown' }
}

/** How a key is named in error messages. */
export function describeKey(key: Uint8Array): string {
  const parsed = parseKey(key)
  switch (parsed.kind) {
    case 'hardState':
      return 'hard state'
    case 'snapshot':
      return 'snapshot'
    case 'entry':
      return `entry ${parsed.index}`
    case 'damageNote':
      return 'damage note'
    case 'unknown':
      return `unknown key 0x${Buffer.from(key).toString('hex')}`
  }
}

// ---- encoding ------------------------------------------------------------------------------

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder('utf-8', { fatal: true })

class RecordWriter {
  private readonly bytes: Uint8Array
  private readonly view: DataView
  private offset = 0

  constructor(type: number, fieldBytes: number) {
    this.bytes = new Uint8Array(HEADER_BYTES + fieldBytes + CHECKSUM_BYTES)
    this.view = new DataView(this.bytes.buffer)
    this.u8(RECORD_FORMAT_VERSION)
    this.u8(type)
  }

  u8(value: number): void {
    this.view.setUint8(this.offset, value)
    this.offset += 1
  }

  u16(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xffff, `u16 ${value}`)
    this.view.setUint16(this.offset, value)
    this.offset += 2
  }

  u32(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value < UINT32_LIMIT, `u32 ${value}`)
    this.view.setUint32(this.offset, value)
    this.offset += 4
  }

  u64(value: number): void {
    assert(Number.isSafeInteger(value) && value >= 0, `u64 ${value}`)
    this.view.setUint32(this.offset, Math.floor(value / UINT32_LIMIT))
    this.view.setUint32(this.offset + 4, value >>> 0)
    this.offset += 8
  }

  raw(bytes: Uint8Array): void {
    this.bytes.set(bytes, this.offset)
    this.offset += bytes.length
  }

  /** A length-prefixed byte string. */
  blob(bytes: Uint8Array): void {
    this.u32(bytes.length)
    this.raw(bytes)
  }

  finish(): Uint8Array {
    const checksumOffset = this.bytes.length - CHECKSUM_BYTES
    assert(this.offset === checksumOffset, `record fields fill ${this.offset} of ${checksumOffset}`)
    this.view.setUint32(checksumOffset, crc32(this.bytes.subarray(0, checksumOffset)))
    return this.bytes
  }
}

function encodedNodeId(node: NodeId): Uint8Array {
  const bytes = textEncoder.encode(node)
  assert(bytes.length <= NODE_ID_BYTES_MAX, `node id of ${bytes.length} bytes`)
  return bytes
}

function writeNodeIds(writer: RecordWriter, encoded: readonly Uint8Array[]): void {
  assert(encoded.length <= MEMBERS_MAX, `${encoded.length} members`)
  writer.u16(encoded.length)
  for (const bytes of encoded) {
    writer.u16(bytes.length)
    writer.raw(bytes)
  }
}

const nodeIdsBytes = (encoded: readonly Uint8Array[]): number =>
  2 + encoded.reduce((sum, bytes) => sum + 2 + bytes.length, 0)

export function encodeHardState(hardState: HardState): Uint8Array {
  // The vote is a list of zero or one node ids, so that "no vote" needs no extra flag.
  const vote = hardState.vote === null ? [] : [encodedNodeId(hardState.vote)]
  const writer = new RecordWriter(RECORD_TYPE_HARD_STATE, 8 + 8 + nodeIdsBytes(vote))
  writer.u64(hardState.term)
  writer.u64(hardState.commit)
  writeNodeIds(writer, vote)
  return writer.finish()
}

export function encodeSnapshot(snapshot: Snapshot): Uint8Array {
  const { meta, data } = snapshot
  const voters = meta.membership.voters.map(encodedNodeId)
  const learners = meta.membership.learners.map(encodedNodeId)
  const fieldBytes = 8 + 8 + nodeIdsBytes(voters) + nodeIdsBytes(learners) + 4 + data.length
  const writer = new RecordWriter(RECORD_TYPE_SNAPSHOT, fieldBytes)
  writer.u64(meta.index)
  writer.u64(meta.term)
  writeNodeIds(writer, voters)
  writeNodeIds(writer, learners)
  writer.blob(data)
  return writer.finish()
}

export function encodeEntry(entry: Entry): Uint8Array {
  const kindCode = ENTRY_KINDS.indexOf(entry.kind)
  assert(kindCode >= 0, `entry kind ${String(entry.kind)}`)
  const writer = new RecordWriter(RECORD_TYPE_ENTRY, 8 + 8 + 1 + 4 + entry.data.length)
  writer.u64(entry.index)
  writer.u64(entry.term)
  writer.u8(kindCode)
  writer.blob(entry.data)
  return writer.finish()
}

export function encodeDamageNote(text: string): Uint8Array {
  const bytes = textEncoder.encode(text)
  const writer = new RecordWriter(RECORD_TYPE_DAMAGE_NOTE, 4 + bytes.length)
  writer.blob(bytes)
  return writer.finish()
}

// ---- decoding ------------------------------------------------------------------------------

/** Reads fields of a record whose checksum has been verified; any overrun is corruption. */
class RecordReader {
  private readonly view: DataView
  private offset = HEADER_BYTES

  constructor(
    private readonly bytes: Uint8Array,
    private readonly where: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength - CHECKSUM_BYTES)
  }

  corrupt(problem: string): ClusterError {
    return ClusterError.corruptStore(`${this.where}: ${problem}`)
  }

  private take(count: number, field: string): number {
    const start = this.offset
    if (start + count > this.view.byteLength)
      throw this.corrupt(`${field} runs past the end of the record (offset ${start})`)
    this.offset += count
    return start
  }

  u8(field: string): number {
    return this.view.getUint8(this.take(1, field))
  }

  u16(field: string): number {
    return this.view.getUint16(this.take(2, field))
  }

  u32(field: string): number {
    return this.view.getUint32(this.take(4, field))
  }

  u64(field: string): number {
    const start = this.take(8, field)
    const value = this.view.getUint32(start) * UINT32_LIMIT + this.view.getUint32(start + 4)
    if (!Number.isSafeInteger(value)) throw this.corrupt(`${field} ${value} is beyond 2^53`)
    return value
  }

  raw(count: number, field: string): Uint8Array {
    const start = this.take(count, field)
    // A plain copy (Buffer#slice would share memory), so that callers never hold or mutate
    // the database's own buffer.
    return new Uint8Array(this.bytes.subarray(start, start + count))
  }

  blob(field: string): Uint8Array {
    return this.raw(this.u32(`${field} length`), field)
  }

  nodeIds(field: string): NodeId[] {
    const count = this.u16(`${field} count`)
    const nodes: NodeId[] = []
    for (let position = 0; position < count; position++) {
      const bytes = this.raw(this.u16(`${field} id length`), `${field} id`)
      nodes.push(this.text(bytes, `${field} id ${position}`) as NodeId)
    }
    return nodes
  }

  text(bytes: Uint8Array, field: string): string {
    try {
      return textDecoder.decode(bytes)
    } catch {
      throw this.corrupt(`${field} is not valid UTF-8`)
    }
  }

  end(): void {
    const trailing = this.view.byteLength - this.offset
    if (trailing !== 0) throw this.corrupt(`${trailing} unexpected bytes after the last field`)
  }
}

function openRecord(bytes: Uint8Array, type: number, where: string): RecordReader {
  const problem = (text: string) => ClusterError.corruptStore(`${where}: ${text}`)
  if (bytes.length < HEADER_BYTES + CHECKSUM_BYTES)
    throw problem(`record of ${bytes.length} bytes is too short`)
  const checksumOffset = bytes.length - CHECKSUM_BYTES
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const stored = view.getUint32(checksumOffset)
  const computed = crc32(bytes.subarray(0, checksumOffset))
  if (stored !== computed)
    throw problem(`checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)})`)
  const version = bytes[0]
  if (version !== RECORD_FORMAT_VERSION)
    throw problem(`record format version ${version}, expected ${RECORD_FORMAT_VERSION}`)
  if (bytes[1] !== type) throw problem(`record type ${bytes[1]}, expected ${type}`)
  return new RecordReader(bytes, where)
}

const hex32 = (value: number): string => `0x${value.toString(16).padStart(8, '0')}`

/** `where` names the record in error messages (every failure is a CORRUPT_STORE ClusterError). */
export function decodeHardState(bytes: Uint8Array, where: string): HardState {
  const reader = openRecord(bytes, RECORD_TYPE_HARD_STATE, where)
  const term = reader.u64('term') as Term
  const commit = reader.u64('commit') as LogIndex
  const votes = reader.nodeIds('vote')
  reader.end()
  if (votes.length > 1) throw reader.corrupt(`${votes.length} votes`)
  return { term, vote: votes[0] ?? null, commit }
}

export function decodeSnapshot(bytes: Uint8Array, where: string): Snapshot {
  const reader = openRecord(bytes, RECORD_TYPE_SNAPSHOT, where)
  const index = reader.u64('index') as LogIndex
  const term = reader.u64('term') as Term
  const voters = reader.nodeIds('voter')
  const learners = reader.nodeIds('learner')
  const data = reader.blob('data')
  reader.end()
  return { meta: { index, term, membership: { voters, learners } }, data }
}

export function decodeEntry(bytes: Uint8Array, where: string): Entry {
  const reader = openRecord(bytes, RECORD_TYPE_ENTRY, where)
  const index = reader.u64('index') as LogIndex
  const term = reader.u64('term') as Term
  const kindCode = reader.u8('kind')
  const data = reader.blob('data')
  reader.end()
  const kind = ENTRY_KINDS[kindCode]
  if (kind === undefined) throw reader.corrupt(`unknown entry kind ${kindCode}`)
  return { index, term, kind, data }
}

export function decodeDamageNote(bytes: Uint8Array, where: string): string {
  const reader = openRecord(bytes, RECORD_TYPE_DAMAGE_NOTE, where)
  const text = reader.text(reader.blob('text'), 'the text')
  reader.end()
  return text
}
