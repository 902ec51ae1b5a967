// Patches of big files: the diff of two chunk lists, applied to the first, gives the second
// (on seeded random edits of every kind, repeated chunks included); a local change is one
// short edit; and the master's choice between a patch and a whole put.
import { createHash } from 'node:crypto'
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { ChunkHash } from '../../storage/chunk-types.ts'
import type { FileHash } from '../../storage/chunker.ts'
import {
  PATCH_BASE_CHUNKS_MIN,
  PATCH_SHARE_MAX,
  diffChunkLists,
  fileVersionDrafts,
} from '../../storage/chunk-list-diff.ts'
import {
  applyChunkListEdits,
  sumLengths,
  type ChunkReference,
  type DatasetPath,
  type FileVersion,
  type LogSeq,
  type PatchRecord,
} from '../../storage/version-record.ts'
import { SeededRandom } from '../../sim/seeded-random.ts'

const chunk = (name: string, lengthBytes = 1000): ChunkReference => ({
  hash: createHash('sha256').update(name).digest('hex') as ChunkHash,
  lengthBytes,
})
const chunks = (count: number, prefix = 'c'): ChunkReference[] =>
  Array.from({ length: count }, (_, index) => chunk(`${prefix}${index}`, 1000 + index))

function versionOf(list: readonly ChunkReference[]): FileVersion {
  return {
    path: 'disk.img' as DatasetPath,
    sizeBytes: sumLengths(list),
    mode: 0o600,
    mtimeMs: 1,
    fileHash: 'f'.repeat(64) as FileHash,
    chunks: list,
  }
}

/** The patch record a diff stands for, so that applyChunkListEdits can check it whole. */
function patchOf(base: readonly ChunkReference[], next: readonly ChunkReference[]): PatchRecord {
  return {
    kind: 'patch',
    recordedAtMs: 1,
    ...versionOf(next),
    baseSeq: 0 as LogSeq,
    edits: diffChunkLists(base, next),
  }
}

test('identical lists need no edit; a replaced, inserted or removed chunk is one edit', () => {
  const base = chunks(100)
  assert.equal(diffChunkLists(base, base), [])
  const replaced = base.with(40, chunk('new'))
  assert.equal(diffChunkLists(base, replaced), [{ at: 40, removeCount: 1, insert: [chunk('new')] }])
  const inserted = [...base.slice(0, 10), chunk('a'), chunk('b'), ...base.slice(10)]
  assert.equal(diffChunkLists(base, inserted), [
    { at: 10, removeCount: 0, insert: [chunk('a'), chunk('b')] },
  ])
  const removed = [...base.slice(0, 90), ...base.slice(95)]
  assert.equal(diffChunkLists(base, removed), [{ at: 90, removeCount: 5, insert: [] }])
  assert.equal(diffChunkLists(base, base.slice(0, 60)), [{ at: 60, removeCount: 40, insert: [] }])
  assert.equal(diffChunkLists(base, [...base, chunk('tail')]), [
    { at: 100, removeCount: 0, insert: [chunk('tail')] },
  ])
  assert.equal(diffChunkLists(base, []), [{ at: 0, removeCount: 100, insert: [] }])
  assert.equal(diffChunkLists([], base.slice(0, 2)), [
    { at: 0, removeCount: 0, insert: base.slice(0, 2) },
  ])
})

test('seeded random edits of every kind: the diff applied to the base is the new list', () => {
  const random = new SeededRandom(20261207)
  const next = (below: number): number => random.nextInt(below)
  for (let round = 0; round < 300; round++) {
    // A small pool of names makes repeated chunks common, as zero-filled regions do.
    const pool = 20 + next(200)
    const base = Array.from({ length: next(300) }, () => chunk(`p${next(pool)}`))
    let list = [...base]
    for (let edit = next(6); edit >= 0; edit--) {
      const at = next(list.length + 1)
      const removeCount = next(Math.min(8, list.length - at) + 1)
      const insert = Array.from({ length: next(5) }, () => chunk(`p${next(pool * 2)}`))
      list.splice(at, removeCount, ...insert)
    }
    if (next(10) === 0) list = list.reverse()
    const patch = patchOf(base, list)
    assert.equal(applyChunkListEdits(patch, base), list, `round ${round}`)
  }
})

test('a change in one place of a big list is one edit of the chunks it touched', () => {
  const base = chunks(4000)
  const next = [...base]
  next.splice(2000, 2, chunk('edited-1'), chunk('edited-2'))
  const edits = diffChunkLists(base, next)
  assert.equal(edits, [
    { at: 2000, removeCount: 2, insert: [chunk('edited-1'), chunk('edited-2')] },
  ])
})

test('the master records a patch for a small change to a big file, a whole put otherwise', () => {
  const base = { seq: 7 as LogSeq, chunks: chunks(1000) }
  const small = base.chunks.with(500, chunk('changed'))
  const [patch, ...rest] = fileVersionDrafts(versionOf(small), base)
  assert.equal(rest, [])
  assert.is(patch?.kind, 'patch')
  assert.equal(patch?.kind === 'patch' && patch.baseSeq, 7)

  // No base, a base below the minimum, or a change past the share: a whole put.
  const put = (drafts: ReturnType<typeof fileVersionDrafts>): boolean =>
    drafts.length === 1 && drafts[0]!.kind === 'put'
  assert.ok(put(fileVersionDrafts(versionOf(small), null)))
  const tiny = { seq: 1 as LogSeq, chunks: chunks(PATCH_BASE_CHUNKS_MIN - 1) }
  assert.ok(put(fileVersionDrafts(versionOf(tiny.chunks.with(3, chunk('x'))), tiny)))
  const rewrittenShare = Math.ceil(1000 * PATCH_SHARE_MAX) + 1
  const rewritten = [...chunks(rewrittenShare, 'other'), ...base.chunks.slice(rewrittenShare)]
  assert.ok(put(fileVersionDrafts(versionOf(rewritten), base)))
  // The same content with other metadata is no patch at all (a patch has edits).
  assert.ok(put(fileVersionDrafts({ ...versionOf(base.chunks), mode: 0o644 }, base)))
})

test.run()
