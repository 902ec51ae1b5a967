// The schemas of the fields that commands and snapshots share: what a name, a peer id, a
// path or an address may look like. Names and ids are restricted to a safe charset, as
// they appear in paths, logs and command lines.
import { posix } from 'node:path'
import * as z from 'zod'
import type { NodeId } from '../../consensus/types.ts'
import {
  ADDRESSES_PER_NODE_MAX,
  ADDRESS_LENGTH_MAX,
  DATASET_KEY_HEX_LENGTH,
  NAME_LENGTH_MAX,
  PATH_BYTES_MAX,
  PEER_ID_LENGTH_MAX,
  REPLICAS_PER_DATASET_MAX,
} from './limits.ts'
import { NODE_ROLES } from './topology-state.ts'

const NAME_PATTERN = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${NAME_LENGTH_MAX - 1}}$`)
const PEER_ID_PATTERN = new RegExp(`^[A-Za-z0-9]{1,${PEER_ID_LENGTH_MAX}}$`)
// A multiaddr as text: printable ASCII without spaces, starting with a slash.
const ADDRESS_PATTERN = new RegExp(`^/[\\x21-\\x7e]{1,${ADDRESS_LENGTH_MAX - 1}}$`)
const KEY_PATTERN = new RegExp(`^[0-9a-f]{${DATASET_KEY_HEX_LENGTH}}$`)
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/
const LONE_SURROGATE = /\p{Cs}/u

const utf8Encoder = new TextEncoder()

export const nameSchema = z.string().regex(NAME_PATTERN, {
  error: `must be 1 to ${NAME_LENGTH_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit`,
})

export const peerIdSchema = z.custom<NodeId>(
  (value) => typeof value === 'string' && PEER_ID_PATTERN.test(value),
  { error: `must be a peer id: 1 to ${PEER_ID_LENGTH_MAX} letters and digits` },
)

export const roleListSchema = z
  .array(z.enum(NODE_ROLES, { error: `must be one of ${NODE_ROLES.join(', ')}` }))
  .min(1, { error: 'must name at least one role' })
  .max(NODE_ROLES.length)
  .refine((roles) => new Set(roles).size === roles.length, { error: 'names a role twice' })

export const addressListSchema = z
  .array(
    z.string().regex(ADDRESS_PATTERN, {
      error: `must be a multiaddr: '/' then up to ${ADDRESS_LENGTH_MAX - 1} printable ASCII characters`,
    }),
  )
  .max(ADDRESSES_PER_NODE_MAX, { error: `must list at most ${ADDRESSES_PER_NODE_MAX} addresses` })
  .refine((addresses) => new Set(addresses).size === addresses.length, {
    error: 'lists an address twice',
  })

/** Null when `path` is an absolute, normalised path other than the root, else why not. */
export function absolutePathProblem(path: string): string | null {
  if (!path.startsWith('/')) return `'${path}' is not an absolute path`
  if (CONTROL_CHARACTER.test(path) || LONE_SURROGATE.test(path))
    return 'holds a control character or text that is not well-formed Unicode'
  if (utf8Encoder.encode(path).length > PATH_BYTES_MAX) return `is over ${PATH_BYTES_MAX} bytes`
  if (path === '/') return 'cannot be the root directory'
  const normalised = posix.normalize(path).replace(/\/$/, '')
  if (normalised !== path) return `'${path}' is not in normal form (write '${normalised}')`
  return null
}

export const absolutePathSchema = z.string().superRefine((path, context) => {
  const problem = absolutePathProblem(path)
  if (problem !== null) context.addIssue({ code: 'custom', message: problem })
})

export const datasetKeySchema = z.string().regex(KEY_PATTERN, {
  error: `must be ${DATASET_KEY_HEX_LENGTH} lowercase hex digits`,
})

export const replicaRequestSchema = z.strictObject({
  name: nameSchema,
  mirror: absolutePathSchema.nullable(),
})

export const replicaRequestListSchema = z
  .array(replicaRequestSchema)
  .max(REPLICAS_PER_DATASET_MAX, {
    error: `must list at most ${REPLICAS_PER_DATASET_MAX} replicas`,
  })

/** One line naming the first problem zod found (and how many more there are). */
export function describeIssues(error: z.ZodError): string {
  const [first] = error.issues
  if (first === undefined) return 'invalid'
  const where = first.path.length > 0 ? `${first.path.join('.')}: ` : ''
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problems)` : ''
  return `${where}${first.message}${more}`
}
