// Where a file version's chunk list comes from: a put record (with the continuation records
// just before it when the list is long), or a patch record's edits applied to the chunk list
// of its base put. Shared by everything that needs a version's content from the log: the
// index (a version exists only when its whole list does), the reader, a replica's chunk sync.
import { ClusterError } from '../consensus/cluster-error.ts'
import {
  applyChunkListEdits,
  assembleChunkList,
  logSeq,
  type ChunkReference,
  type LogSeq,
  type PutRecord,
  type VersionRecord,
} from './version-record.ts'

export type ReadRecord = (seq: LogSeq) => Promise<VersionRecord>

/** A put record and its whole chunk list: what a new version's patch is made against. */
export interface PatchBase {
  readonly seq: LogSeq
  readonly chunks: readonly ChunkReference[]
}

/**
 * The whole chunk list of the put or patch record at `seq`. BAD_MESSAGE when the log holds
 * no whole file version there (not a put or patch, continuations missing, a patch whose base
 * is not an earlier put or whose edits do not fit it).
 */
export async function versionChunkList(seq: LogSeq, read: ReadRecord): Promise<ChunkReference[]> {
  const record = await read(seq)
  if (record.kind === 'put') return putChunkList(seq, record, read)
  if (record.kind !== 'patch')
    throw ClusterError.badMessage(`record ${seq} is a ${record.kind} record, not a file version`)
  const base = await patchBaseAt(record.baseSeq, seq, read)
  return applyChunkListEdits(record, base.chunks)
}

/**
 * The put a new version of the content at `seq` is patched against: that record itself when
 * it is a put, else the base of its patch (edits are always cumulative from a put).
 */
export async function patchBaseOf(seq: LogSeq, read: ReadRecord): Promise<PatchBase> {
  const record = await read(seq)
  if (record.kind === 'patch') return patchBaseAt(record.baseSeq, seq, read)
  if (record.kind !== 'put')
    throw ClusterError.badMessage(`record ${seq} is a ${record.kind} record, not a file version`)
  return { seq, chunks: await putChunkList(seq, record, read) }
}

async function patchBaseAt(
  baseSeq: LogSeq,
  patchSeq: LogSeq,
  read: ReadRecord,
): Promise<PatchBase> {
  if (baseSeq >= patchSeq)
    throw ClusterError.badMessage(
      `patch at ${patchSeq} names base ${baseSeq}, which is not before it`,
    )
  const base = await read(baseSeq)
  if (base.kind !== 'put')
    throw ClusterError.badMessage(`patch at ${patchSeq} names base ${baseSeq}, which is not a put`)
  return { seq: baseSeq, chunks: await putChunkList(baseSeq, base, read) }
}

async function putChunkList(
  seq: LogSeq,
  put: PutRecord,
  read: ReadRecord,
): Promise<ChunkReference[]> {
  if (put.continuationCount > seq)
    throw ClusterError.badMessage(`put at ${seq} misses continuation records`)
  const continuations: VersionRecord[] = []
  for (let part = seq - put.continuationCount; part < seq; part++)
    continuations.push(await read(logSeq(part)))
  return assembleChunkList(put, continuations)
}
