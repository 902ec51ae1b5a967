// What makes a node id valid, shared by options, config changes and the codec.
import { NODE_ID_BYTES_MAX } from './limits.ts'

const encoder = new TextEncoder()
// In `u` mode, \p{Cs} matches only a lone surrogate, which UTF-8 cannot carry.
const LONE_SURROGATE = /\p{Cs}/u

/** Null when `value` is a valid node id, else why not. */
export function nodeIdProblem(value: string): string | null {
  if (typeof value !== 'string' || value.length === 0) return 'node id is empty'
  if (LONE_SURROGATE.test(value)) return 'node id is not well-formed Unicode'
  // A UTF-16 length above the byte limit cannot fit; skip the encoding then.
  if (value.length > NODE_ID_BYTES_MAX || encoder.encode(value).length > NODE_ID_BYTES_MAX)
    return `node id is over ${NODE_ID_BYTES_MAX} bytes`
  return null
}
