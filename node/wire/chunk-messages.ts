// The frames of the chunk protocol, in binary because chunk bytes are most of the
// traffic. A request names up to CHUNK_REQUEST_HASHES_MAX chunks by their 32-byte hash;
// the server answers every requested hash, in order, with one frame: the chunk, "missing",
// or (once, instead of any answer) "refused" with a reason. Decoders return a result and
// never throw: a peer's bytes are untrusted.
import {
  CHUNK_HASH_BYTES,
  CHUNK_SIZE_MAX_BYTES,
  type ChunkHash,
} from '../../storage/chunk-types.ts'
import { ERROR_MESSAGE_CHARS_MAX } from './json-frames.ts'

/** Hashes one request may carry. */
export const CHUNK_REQUEST_HASHES_MAX = 256

const REQUEST_KIND_WANT = 1
const REQUEST_HEADER_BYTES = 1 + 2
const RESPONSE_HEADER_BYTES = 1 + CHUNK_HASH_BYTES

export type ChunkResponse =
  | { readonly kind: 'chunk'; readonly hash: ChunkHash; readonly bytes: Uint8Array }
  | { readonly kind: 'missing'; readonly hash: ChunkHash }
  | { readonly kind: 'refused'; readonly reason: string }

const RESPONSE_KINDS = ['chunk', 'missing', 'refused'] as const

export type Decoded<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string }

export function encodeRequest(hashes: readonly ChunkHash[]): Uint8Array {
  const frame = new Uint8Array(REQUEST_HEADER_BYTES + hashes.length * CHUNK_HASH_BYTES)
  frame[0] = REQUEST_KIND_WANT
  new DataView(frame.buffer).setUint16(1, hashes.length)
  for (const [index, hash] of hashes.entries())
    frame.set(Buffer.from(hash, 'hex'), REQUEST_HEADER_BYTES + index * CHUNK_HASH_BYTES)
  return frame
}

export function decodeRequest(frame: Uint8Array): Decoded<ChunkHash[]> {
  if (frame.byteLength < REQUEST_HEADER_BYTES || frame[0] !== REQUEST_KIND_WANT)
    return { ok: false, error: 'not a chunk request' }
  const count = new DataView(frame.buffer, frame.byteOffset).getUint16(1)
  if (count === 0 || count > CHUNK_REQUEST_HASHES_MAX)
    return {
      ok: false,
      error: `a chunk request of ${count} hashes (1..${CHUNK_REQUEST_HASHES_MAX})`,
    }
  if (frame.byteLength !== REQUEST_HEADER_BYTES + count * CHUNK_HASH_BYTES)
    return { ok: false, error: `a chunk request of ${count} hashes in ${frame.byteLength} bytes` }
  const hashes: ChunkHash[] = []
  for (let index = 0; index < count; index++) {
    const start = REQUEST_HEADER_BYTES + index * CHUNK_HASH_BYTES
    hashes.push(hexOf(frame.subarray(start, start + CHUNK_HASH_BYTES)))
  }
  return { ok: true, value: hashes }
}

export function encodeResponse(response: ChunkResponse): Uint8Array {
  const payload =
    response.kind === 'chunk'
      ? response.bytes
      : response.kind === 'refused'
        ? new TextEncoder().encode(response.reason.slice(0, ERROR_MESSAGE_CHARS_MAX))
        : new Uint8Array(0)
  const frame = new Uint8Array(RESPONSE_HEADER_BYTES + payload.byteLength)
  frame[0] = RESPONSE_KINDS.indexOf(response.kind)
  if (response.kind !== 'refused') frame.set(Buffer.from(response.hash, 'hex'), 1)
  frame.set(payload, RESPONSE_HEADER_BYTES)
  return frame
}

export function decodeResponse(frame: Uint8Array): Decoded<ChunkResponse> {
  const kind = RESPONSE_KINDS[frame[0] ?? -1]
  if (frame.byteLength < RESPONSE_HEADER_BYTES || kind === undefined)
    return { ok: false, error: 'not a chunk response' }
  const hash = hexOf(frame.subarray(1, RESPONSE_HEADER_BYTES))
  const payload = frame.subarray(RESPONSE_HEADER_BYTES)
  switch (kind) {
    case 'chunk':
      if (payload.byteLength === 0 || payload.byteLength > CHUNK_SIZE_MAX_BYTES)
        return { ok: false, error: `a chunk of ${payload.byteLength} bytes` }
      return { ok: true, value: { kind, hash, bytes: payload } }
    case 'missing':
      if (payload.byteLength !== 0) return { ok: false, error: 'a "missing" answer with a payload' }
      return { ok: true, value: { kind, hash } }
    case 'refused':
      if (payload.byteLength > ERROR_MESSAGE_CHARS_MAX * 4)
        return { ok: false, error: 'an overlong refusal' }
      return { ok: true, value: { kind, reason: Buffer.from(payload).toString('utf8') } }
  }
}

function hexOf(bytes: Uint8Array): ChunkHash {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex') as ChunkHash
}
