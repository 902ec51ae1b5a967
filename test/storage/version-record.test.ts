import { test } from 'uvu'
import * as assert from 'uvu/assert'
import c from 'compact-encoding'
import { createHash } from 'node:crypto'
import { isClusterError } from '../../consensus/cluster-error.ts'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import { decodeRecord, encodeRecord } from '../../storage/version-record-codec.ts'
import {
  CHUNKS_PER_RECORD_MAX,
  PATCH_CHUNKS_MAX,
  PATCH_EDITS_MAX,
  PATH_BYTES_MAX,
  RECORD_BYTES_MAX,
  applyChunkListEdits,
  assembleChunkList,
  checkDatasetPath,
  fileVersionRecords,
  type ChunkReference,
  type DatasetPath,
  type FileHash,
  type LogSeq,
  type PatchRecord,
  type PutRecord,
  type VersionRecord,
} from '../../storage/version-record.ts'

const hashOf = (text: string): string => createHash('sha256').update(text).digest('hex')
const chunk = (index: number, lengthBytes = 1000): ChunkReference => ({
  hash: hashOf(`chunk ${index}`) as ChunkHash,
  lengthBytes,
})
const path = (text: string): DatasetPath => text as DatasetPath

const EXAMPLES: VersionRecord[] = [
  {
    kind: 'put',
    recordedAtMs: 1_700_000_000_000,
    path: path('docs/report ünïcode.txt'),
    sizeBytes: 3000,
    mode: 0o640,
    mtimeMs: -5, // before 1970: mtimes are signed
    fileHash: hashOf('file') as FileHash,
    continuationCount: 0,
    chunks: [chunk(1), chunk(2), chunk(3)],
  },
  {
    kind: 'put',
    recordedAtMs: 1,
    path: path('empty'),
    sizeBytes: 0,
    mode: 0o600,
    mtimeMs: 0,
    fileHash: hashOf('') as FileHash,
    continuationCount: 0,
    chunks: [],
  },
  {
    kind: 'patch',
    recordedAtMs: 2,
    path: path('big/disk.img'),
    sizeBytes: 123_456,
    mode: 0o600,
    mtimeMs: 1_700_000_000_500,
    fileHash: hashOf('patched') as FileHash,
    baseSeq: 77 as LogSeq,
    edits: [
      { at: 3, removeCount: 1, insert: [chunk(8), chunk(9)] },
      { at: 10, removeCount: 2, insert: [] },
      { at: 40, removeCount: 0, insert: [chunk(10)] },
    ],
  },
  { kind: 'chunks', recordedAtMs: 2, path: path('big'), part: 1, chunks: [chunk(4)] },
  { kind: 'delete', recordedAtMs: 3, path: path('a/b') },
  { kind: 'rename', recordedAtMs: 4, from: path('a/b'), to: path('c/d') },
  { kind: 'symlink', recordedAtMs: 5, path: path('link'), target: '../../outside/target' },
  {
    kind: 'directory',
    recordedAtMs: 6,
    path: path('a/empty'),
    mode: 0o1777,
    mtimeMs: 1_700_000_000_123,
  },
  { kind: 'recoveryPoint', recordedAtMs: 7, label: 'before upgrade', timeMs: 1_700_000_000_999 },
]

/** Asserts that decoding fails with BAD_MESSAGE and nothing else. */
function assertBadMessage(bytes: Uint8Array, what: string): void {
  try {
    decodeRecord(bytes)
  } catch (error) {
    assert.ok(isClusterError(error, 'BAD_MESSAGE'), `${what}: ${String(error)}`)
    assert.not.match((error as Error).message, '\n')
    return
  }
  assert.unreachable(`${what}: decoded`)
}

/** A put record's bytes written field by field, bypassing the encoder's checks. */
function handMadePut(pathBytes: Uint8Array, formatVersion = 1, tag = 1): Uint8Array {
  const fields = (state: ReturnType<typeof c.state>, sizing: boolean): void => {
    const put = <T>(encoder: c.Encoder<T>, value: T): void =>
      sizing ? encoder.preencode(state, value) : encoder.encode(state, value)
    put(c.uint, formatVersion)
    put(c.uint8, tag)
    put(c.uint, 1)
    put(c.buffer, pathBytes)
    put(c.uint, 0) // size
    put(c.uint, 0o644)
    put(c.int, 0)
    put(c.fixed32, Buffer.alloc(32))
    put(c.uint, 0) // continuations
    put(c.uint, 0) // chunks
  }
  const state = c.state()
  fields(state, true)
  state.buffer = new Uint8Array(state.end)
  fields(state, false)
  return state.buffer
}

test('every record kind survives encode and decode unchanged', () => {
  for (const record of EXAMPLES) assert.equal(decodeRecord(encodeRecord(record)), record)
})

test('every truncation and every single-byte change of a record is refused cleanly or decodes to a valid record', () => {
  for (const record of EXAMPLES) {
    const bytes = encodeRecord(record)
    for (let length = 0; length < bytes.length; length++)
      assertBadMessage(bytes.subarray(0, length), `${record.kind} cut at ${length}`)
    for (let index = 0; index < bytes.length; index++) {
      for (const flip of [0x01, 0x80, 0xff]) {
        const damaged = Uint8Array.from(bytes)
        damaged[index]! ^= flip
        try {
          const decoded = decodeRecord(damaged)
          assert.is(encodeRecord(decoded).length > 0, true) // anything accepted is itself valid
        } catch (error) {
          assert.ok(
            isClusterError(error, 'BAD_MESSAGE'),
            `${record.kind} byte ${index}: ${String(error)}`,
          )
        }
      }
    }
  }
})

test('decode refuses trailing bytes', () => {
  const valid = encodeRecord(EXAMPLES[3]!)
  assertBadMessage(Uint8Array.from([...valid, 0]), 'trailing byte')
})

test('a hand-made record is accepted only with a valid path and known format', () => {
  assert.is(decodeRecord(handMadePut(Buffer.from('ok/path'))).kind, 'put')
  assertBadMessage(handMadePut(Buffer.from('ok'), 2), 'format version 2')
  assertBadMessage(handMadePut(Buffer.from('ok'), 1, 99), 'kind 99')
  for (const bad of [
    '../escape',
    'a/../../b',
    '/etc/passwd',
    'a//b',
    'a/',
    './a',
    'a\0b',
    '',
    'x'.repeat(PATH_BYTES_MAX + 1),
  ])
    assertBadMessage(handMadePut(Buffer.from(bad)), `path ${JSON.stringify(bad.slice(0, 20))}`)
  assertBadMessage(handMadePut(Uint8Array.from([0x66, 0xff, 0x2e])), 'non-UTF-8 path')
  assertBadMessage(handMadePut(Uint8Array.from([0xed, 0xa0, 0x80])), 'encoded lone surrogate')
})

test('encode refuses invalid records with BAD_ARGUMENT', () => {
  const put = EXAMPLES[0] as PutRecord
  const patch = EXAMPLES.find((record) => record.kind === 'patch')!
  const bad: VersionRecord[] = [
    { ...put, path: path('../x') },
    { ...put, path: path('a\ud800b') },
    { ...put, mode: 0o10000 },
    { ...put, sizeBytes: 2999 }, // chunk lengths do not add up
    { ...put, fileHash: 'xyz' as FileHash },
    { ...put, chunks: [{ hash: hashOf('x') as ChunkHash, lengthBytes: 0 }] },
    { ...put, mtimeMs: 1.5 },
    { kind: 'rename', recordedAtMs: 1, from: path('a'), to: path('a') },
    { ...patch, edits: [] },
    { ...patch, edits: [{ at: 1, removeCount: 0, insert: [] }] }, // an empty edit
    {
      ...patch,
      edits: [
        { at: 5, removeCount: 2, insert: [chunk(1)] },
        { at: 6, removeCount: 1, insert: [chunk(2)] }, // overlaps the one before
      ],
    },
    {
      ...patch,
      edits: [
        { at: 5, removeCount: 0, insert: [chunk(1)] },
        { at: 4, removeCount: 1, insert: [] }, // out of order
      ],
    },
    { ...patch, edits: [{ at: -1, removeCount: 1, insert: [] }] },
    { ...patch, baseSeq: 1.5 as LogSeq },
    {
      ...patch,
      edits: Array.from({ length: PATCH_EDITS_MAX + 1 }, (_, index) => ({
        at: index,
        removeCount: 1,
        insert: [],
      })),
    },
    { kind: 'symlink', recordedAtMs: 1, path: path('l'), target: '' },
    { kind: 'recoveryPoint', recordedAtMs: 1, label: 'two\nlines', timeMs: 1 },
  ]
  for (const record of bad)
    assert.throws(
      () => encodeRecord(record),
      (error: unknown) => isClusterError(error, 'BAD_ARGUMENT'),
    )
})

test('dataset paths: what is valid and what is not', () => {
  for (const good of ['a', 'a/b/c', '.hidden', 'a..b', 'ünï/😀', 'x'.repeat(255)])
    assert.is(checkDatasetPath(good), null, good)
  for (const bad of [
    '',
    '/a',
    'a/',
    'a//b',
    '.',
    '..',
    'a/./b',
    'a/../b',
    'a\0',
    'x'.repeat(256),
    'a\udc00',
  ])
    assert.type(checkDatasetPath(bad), 'string', JSON.stringify(bad))
})

test('a long chunk list is split into continuation records before its put, and reassembled', () => {
  const chunks = Array.from({ length: 10 }, (_, index) => chunk(index, 100))
  const version = {
    path: path('big/file'),
    sizeBytes: 1000,
    mode: 0o644,
    mtimeMs: 5,
    fileHash: hashOf('big') as FileHash,
    chunks,
  }
  const drafts = fileVersionRecords(version, 3)
  assert.equal(
    drafts.map((draft) => draft.kind),
    ['chunks', 'chunks', 'chunks', 'put'],
  )
  const records = drafts.map((draft) =>
    decodeRecord(encodeRecord({ ...draft, recordedAtMs: 9 } as VersionRecord)),
  )
  const put = records[3] as PutRecord
  assert.is(put.continuationCount, 3)
  assert.equal(assembleChunkList(put, records.slice(0, 3)), chunks)
  // Out of order, missing or foreign continuations are refused.
  const refused = (continuations: VersionRecord[]): boolean => {
    try {
      assembleChunkList(put, continuations)
      return false
    } catch (error) {
      return isClusterError(error, 'BAD_MESSAGE')
    }
  }
  assert.ok(refused([records[1]!, records[0]!, records[2]!]))
  assert.ok(refused(records.slice(0, 2)))
  assert.ok(
    refused([
      records[0]!,
      records[1]!,
      { ...(records[2] as VersionRecord & { kind: 'chunks' }), path: path('other') },
    ]),
  )
})

test('a patch applies its edits to the base list, and is refused where they do not fit', () => {
  const base = Array.from({ length: 12 }, (_, index) => chunk(index, 100))
  const edits = [
    { at: 0, removeCount: 1, insert: [chunk(100, 100), chunk(101, 100)] },
    { at: 5, removeCount: 3, insert: [chunk(102, 100)] },
    { at: 12, removeCount: 0, insert: [chunk(103, 50)] }, // appended at the end
  ]
  const patch: PatchRecord = {
    ...(EXAMPLES.find((record) => record.kind === 'patch') as PatchRecord),
    sizeBytes: 100 * (12 + 2 - 1 + 1 - 3) + 50,
    edits,
  }
  assert.equal(applyChunkListEdits(patch, base), [
    chunk(100, 100),
    chunk(101, 100),
    ...base.slice(1, 5),
    chunk(102, 100),
    ...base.slice(8, 12),
    chunk(103, 50),
  ])
  const refused = (record: PatchRecord, list: ChunkReference[], what: string): void =>
    assert.throws(
      () => applyChunkListEdits(record, list),
      (error: unknown) => isClusterError(error, 'BAD_MESSAGE'),
      what,
    )
  refused(patch, base.slice(0, 11), 'an edit past the end of a shorter base')
  refused({ ...patch, sizeBytes: patch.sizeBytes + 1 }, base, 'lengths that do not add up')
})

test('the largest possible patch record fits in one block', () => {
  const perEdit = Math.floor(PATCH_CHUNKS_MAX / PATCH_EDITS_MAX)
  const edits = Array.from({ length: PATCH_EDITS_MAX }, (_, index) => ({
    at: 2 ** 31 + index * 2 ** 20,
    removeCount: 2 ** 20 - 1,
    insert: Array.from(
      { length: index === 0 ? PATCH_CHUNKS_MAX - perEdit * (PATCH_EDITS_MAX - 1) : perEdit },
      (_, at) => chunk(index * 1000 + at, 262_144),
    ),
  }))
  const record: PatchRecord = {
    kind: 'patch',
    recordedAtMs: Number.MAX_SAFE_INTEGER,
    path: path(
      Array.from({ length: 4 }, () => 'é'.repeat(127))
        .join('/')
        .slice(0, 1000),
    ),
    sizeBytes: Number.MAX_SAFE_INTEGER,
    mode: 0o7777,
    mtimeMs: -(2 ** 52),
    fileHash: hashOf('x') as FileHash,
    baseSeq: (2 ** 40) as LogSeq,
    edits,
  }
  const bytes = encodeRecord(record)
  assert.ok(bytes.length <= RECORD_BYTES_MAX, `${bytes.length} bytes`)
  assert.equal(decodeRecord(bytes), record)
})

test('the largest possible put record fits in one block', () => {
  const record: PutRecord = {
    kind: 'put',
    recordedAtMs: Number.MAX_SAFE_INTEGER,
    path: path(
      Array.from({ length: 4 }, () => 'é'.repeat(127))
        .join('/')
        .slice(0, 1000),
    ),
    sizeBytes: CHUNKS_PER_RECORD_MAX * 262_144,
    mode: 0o7777,
    mtimeMs: -(2 ** 52),
    fileHash: hashOf('x') as FileHash,
    continuationCount: 4096,
    chunks: Array.from({ length: CHUNKS_PER_RECORD_MAX }, (_, index) => chunk(index, 262_144)),
  }
  const bytes = encodeRecord(record)
  assert.ok(bytes.length <= RECORD_BYTES_MAX, `${bytes.length} bytes`)
  assert.equal(decodeRecord(bytes), record)
})

test.run()
