// JSON bodies for the frames of the control protocols (rpc, the log handshake), and the
// shape an error takes on the wire: a ClusterError's code and its one-line message.
import * as z from 'zod'
import { isClusterError, type ClusterErrorCode } from '../../consensus/cluster-error.ts'

/** Error messages are cut to this length: one readable line. */
export const ERROR_MESSAGE_CHARS_MAX = 1000

const CLUSTER_ERROR_CODES = [
  'BAD_ARGUMENT',
  'BAD_MESSAGE',
  'CORRUPT_STORE',
  'NOT_FOUND',
  'PRUNED',
  'UNSAFE_PATH',
  'FILE_UNSTABLE',
  'HASH_MISMATCH',
  'NOT_LEADER',
  'REFUSED',
  'TIMEOUT',
  'CLOSED',
  'IO_ERROR',
] as const satisfies readonly ClusterErrorCode[]
// Fails to compile when cluster-error.ts gains a code this list lacks.
const everyCodeListed: Exclude<ClusterErrorCode, (typeof CLUSTER_ERROR_CODES)[number]> extends never
  ? true
  : false = true
void everyCodeListed

export const errorBodySchema = z
  .object({ code: z.enum(CLUSTER_ERROR_CODES), message: z.string().max(ERROR_MESSAGE_CHARS_MAX) })
  .strict()
export type ErrorBody = z.infer<typeof errorBodySchema>

/** How an error travels: its code when it is a ClusterError (IO_ERROR otherwise), one line. */
export function errorBody(error: unknown): ErrorBody {
  const code = isClusterError(error) ? error.code : 'IO_ERROR'
  const message = error instanceof Error ? error.message : String(error)
  return { code, message: message.replace(/\s*\n\s*/g, ' ').slice(0, ERROR_MESSAGE_CHARS_MAX) }
}

export function encodeJson(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value))
}

/** Parsed JSON, or undefined when there are no bytes or they are not JSON (a schema then refuses it). */
export function decodeJson(bytes: Uint8Array | null): unknown {
  if (bytes === null) return undefined
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch {
    return undefined
  }
}
