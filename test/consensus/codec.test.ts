// The binary codec: every value round-trips, and any bytes at all — every truncation of a
// valid encoding, flipped bytes, random strings, over-limit counts — decode to a clean
// one-line error, never a throw.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import {
  ENTRIES_PER_MESSAGE_MAX,
  MESSAGE_BYTES_MAX,
  NODE_ID_BYTES_MAX,
  decodeConfigChange,
  decodeEntry,
  decodeHardState,
  decodeMessage,
  decodeSnapshot,
  encodeConfigChange,
  encodeEntry,
  encodeHardState,
  encodeMessage,
  encodeSnapshot,
  type DecodeResult,
} from '../../consensus/codec.ts'
import type { ConfigChange, HardState, Message, Snapshot } from '../../consensus/types.ts'
import { logIndex, nodeId, term } from '../../consensus/types.ts'
import { SeededRandom, entriesWithTerms, ids } from './helpers/network.ts'

const from = nodeId('node-α') // not ASCII, on purpose
const to = nodeId('b')
const snapshot: Snapshot = {
  meta: {
    index: logIndex(2 ** 40),
    term: term(7),
    membership: { voters: ids('a', 'b'), learners: ids('c') },
  },
  data: new Uint8Array([1, 2, 3, 255]),
}

const MESSAGES: Message[] = [
  {
    type: 'preVote',
    from,
    to,
    term: term(3),
    lastLogIndex: logIndex(9),
    lastLogTerm: term(2),
    transfer: null,
  },
  {
    type: 'vote',
    from,
    to,
    term: term(3),
    lastLogIndex: logIndex(9),
    lastLogTerm: term(2),
    transfer: { leader: nodeId('c'), term: term(2) },
  },
  { type: 'preVoteResponse', from, to, term: term(3), granted: true },
  { type: 'voteResponse', from, to, term: term(3), granted: false },
  {
    type: 'append',
    from,
    to,
    term: term(5),
    prevLogIndex: logIndex(4),
    prevLogTerm: term(4),
    entries: [
      ...entriesWithTerms([4, 5], 5),
      {
        term: term(5),
        index: logIndex(7),
        kind: 'config',
        data: encodeConfigChange({ type: 'remove', node: to }),
      },
      { term: term(5), index: logIndex(8), kind: 'noop', data: new Uint8Array(0) },
    ],
    commit: logIndex(4),
    sentTick: Number.MAX_SAFE_INTEGER,
  },
  {
    type: 'appendResponse',
    from,
    to,
    term: term(5),
    success: false,
    index: logIndex(9),
    hintIndex: logIndex(3),
    hintTerm: term(2),
    sentTick: 17,
  },
  { type: 'heartbeat', from, to, term: term(5), commit: logIndex(4), sentTick: 18 },
  { type: 'heartbeatResponse', from, to, term: term(5), sentTick: 18 },
  { type: 'snapshot', from, to, term: term(7), snapshot, sentTick: 19 },
  { type: 'timeoutNow', from, to, term: term(5) },
]

const HARD_STATES: HardState[] = [
  { term: term(0), vote: null, commit: logIndex(0) },
  { term: term(9), vote: nodeId('a'), commit: logIndex(12) },
]
const CONFIG_CHANGES: ConfigChange[] = [
  { type: 'addVoter', node: nodeId('a') },
  { type: 'addLearner', node: nodeId('b') },
  { type: 'remove', node: nodeId('c') },
]

/** Every encoder with its decoder and sample values. */
const CODECS: {
  name: string
  samples: unknown[]
  encode: (value: never) => Uint8Array
  decode: (bytes: Uint8Array) => DecodeResult<unknown>
}[] = [
  { name: 'message', samples: MESSAGES, encode: encodeMessage, decode: decodeMessage },
  { name: 'entry', samples: entriesWithTerms([1, 2]), encode: encodeEntry, decode: decodeEntry },
  { name: 'snapshot', samples: [snapshot], encode: encodeSnapshot, decode: decodeSnapshot },
  { name: 'hard state', samples: HARD_STATES, encode: encodeHardState, decode: decodeHardState },
  {
    name: 'config change',
    samples: CONFIG_CHANGES,
    encode: encodeConfigChange,
    decode: decodeConfigChange,
  },
]

function errorOf(result: DecodeResult<unknown>): string {
  assert.not.ok(result.ok, 'expected a decode error')
  return result.ok ? '' : result.error
}

test('every message type, and entries, snapshots, hard states and config changes, round-trip', () => {
  for (const codec of CODECS) {
    for (const sample of codec.samples) {
      const decoded = codec.decode(codec.encode(sample as never))
      assert.ok(decoded.ok, `${codec.name}: ${decoded.ok ? '' : decoded.error}`)
      assert.equal(decoded.ok && decoded.value, sample, codec.name)
    }
  }
  assert.equal(MESSAGES.map((message) => message.type).length, 10)
})

test('every truncation of every valid encoding decodes to a clean error', () => {
  for (const codec of CODECS) {
    for (const sample of codec.samples) {
      const bytes = codec.encode(sample as never)
      for (let length = 0; length < bytes.length; length++) {
        const error = errorOf(codec.decode(bytes.subarray(0, length)))
        assert.match(
          error,
          /^(truncated|bad field|unknown)/,
          `${codec.name} cut at ${length}: ${error}`,
        )
        assert.not.match(error, /\n/)
      }
    }
  }
})

test('random byte strings, and valid encodings with one byte changed, never throw', () => {
  const random = new SeededRandom(42)
  const decoders = CODECS.map((codec) => codec.decode)
  for (let round = 0; round < 3000; round++) {
    const bytes = new Uint8Array(random.nextInt(200))
    for (let index = 0; index < bytes.length; index++) bytes[index] = random.nextInt(256)
    if (round % 2 === 0 && bytes.length > 0) bytes[0] = 1 // get past the version byte
    for (const decode of decoders) {
      const result = decode(bytes)
      if (!result.ok) assert.type(result.error, 'string')
    }
  }
  for (const codec of CODECS) {
    for (const sample of codec.samples) {
      const bytes = codec.encode(sample as never)
      for (let index = 0; index < bytes.length; index++) {
        const changed = bytes.slice()
        changed[index] = changed[index]! ^ (1 + random.nextInt(255))
        const result = codec.decode(changed)
        if (!result.ok) assert.type(result.error, 'string')
      }
    }
  }
})

test('specific bad input gets a specific one-line reason', () => {
  const heartbeat = encodeMessage(MESSAGES[6]!)
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array([]), /truncated: format version/],
    [new Uint8Array([9, 1]), /unknown format version 9/],
    [new Uint8Array([1, 42]), /unknown message type 42/],
    [new Uint8Array([...heartbeat, 0]), /1 trailing bytes/],
    [new Uint8Array([1, 3, 0, 2, 0xc3, 0x28]), /bad field: from is not valid UTF-8/],
    [
      new Uint8Array([1, 3, 0xff, 0xff]),
      new RegExp(`from of 65535 bytes is over ${NODE_ID_BYTES_MAX}`),
    ],
  ]
  for (const [bytes, reason] of cases) assert.match(errorOf(decodeMessage(bytes)), reason)
  const tooLarge = new Uint8Array(MESSAGE_BYTES_MAX + 1)
  assert.match(errorOf(decodeMessage(tooLarge)), /over MESSAGE_BYTES_MAX/)
})

test('counts and values over their limits, and semantically bad messages, are refused', () => {
  const append = MESSAGES[4] as Extract<Message, { type: 'append' }>
  const manyEntries = encodeMessage({ ...append, entries: [] })
  // The entry count is the last four bytes of an append with no entries.
  const view = new DataView(manyEntries.buffer, manyEntries.byteOffset)
  view.setUint32(manyEntries.length - 4, ENTRIES_PER_MESSAGE_MAX + 1)
  assert.match(errorOf(decodeMessage(manyEntries)), /entries 4097 is over 4096/)
  view.setUint32(manyEntries.length - 4, 1000)
  assert.match(errorOf(decodeMessage(manyEntries)), /truncated: 1000 entries cannot fit/)

  const gap = encodeMessage({ ...append, entries: entriesWithTerms([5], 6) })
  assert.match(errorOf(decodeMessage(gap)), /bad field: entry index 6 does not follow 4/)
  const toItself = encodeMessage({ ...MESSAGES[7]!, to: from })
  assert.match(errorOf(decodeMessage(toItself)), /bad field: message from node-α to itself/)
  const twice = encodeSnapshot({
    ...snapshot,
    meta: { ...snapshot.meta, membership: { voters: ids('a'), learners: ids('a') } },
  })
  assert.match(errorOf(decodeSnapshot(twice)), /lists node a twice/)

  const hugeTerm = encodeMessage(MESSAGES[9]!)
  hugeTerm.fill(0xff, hugeTerm.length - 8)
  assert.match(errorOf(decodeMessage(hugeTerm)), /bad field: term is over 2\^53/)
  const badBoolean = encodeMessage(MESSAGES[2]!)
  badBoolean[badBoolean.length - 1] = 2
  assert.match(errorOf(decodeMessage(badBoolean)), /granted is 2, not 0 or 1/)
  const badKind = encodeEntry(entriesWithTerms([1])[0]!)
  badKind[17] = 9
  assert.match(errorOf(decodeEntry(badKind)), /unknown entry kind 9/)
})

test.run()
