// Topology commands: small records, proposed through Raft and applied by every node. On the
// wire a command is canonical JSON inside a versioned envelope; the bytes come from the log,
// so decoding treats them as untrusted (bounded size, strict UTF-8, zod schemas, no unknown
// fields) and every failure is a ClusterError BAD_MESSAGE.
import * as z from 'zod'
import { assert } from '../../consensus/assert.ts'
import { ClusterError } from '../../consensus/cluster-error.ts'
import {
  absolutePathSchema,
  addressListSchema,
  datasetKeySchema,
  describeIssues,
  nameSchema,
  peerIdSchema,
  replicaRequestListSchema,
  roleListSchema,
} from './fields.ts'
import { canonicalJson, jsonValueProblem } from './json-value.ts'
import {
  COMMAND_BYTES_MAX,
  RETENTION_POLICY_BYTES_MAX,
  RETENTION_POLICY_DEPTH_MAX,
} from './limits.ts'

/** Raised whenever the envelope or any command changes shape; older nodes refuse newer commands. */
export const COMMAND_FORMAT_VERSION = 1

export const retentionPolicySchema = z.unknown().superRefine((policy, context) => {
  const problem = jsonValueProblem(policy, RETENTION_POLICY_DEPTH_MAX, RETENTION_POLICY_BYTES_MAX)
  if (problem !== null) context.addIssue({ code: 'custom', message: problem })
})

export const commandSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('createCluster'),
    clusterId: nameSchema,
    peerId: peerIdSchema,
    name: nameSchema,
    site: nameSchema,
    addresses: addressListSchema,
  }),
  z.strictObject({
    type: z.literal('admitNode'),
    peerId: peerIdSchema,
    name: nameSchema,
    roles: roleListSchema,
    site: nameSchema,
    addresses: addressListSchema,
  }),
  z.strictObject({ type: z.literal('setRoles'), name: nameSchema, roles: roleListSchema }),
  z.strictObject({ type: z.literal('removeNode'), name: nameSchema }),
  z.strictObject({
    type: z.literal('setAddresses'),
    peerId: peerIdSchema,
    addresses: addressListSchema,
  }),
  z.strictObject({
    type: z.literal('addDataset'),
    id: nameSchema,
    master: nameSchema,
    path: absolutePathSchema,
    replicas: replicaRequestListSchema,
  }),
  z.strictObject({ type: z.literal('removeDataset'), id: nameSchema }),
  z.strictObject({
    type: z.literal('setReplicas'),
    id: nameSchema,
    replicas: replicaRequestListSchema,
  }),
  z.strictObject({
    type: z.literal('setRetention'),
    id: nameSchema,
    /** Null clears the policy. */
    policy: retentionPolicySchema,
  }),
  z.strictObject({
    type: z.literal('setDatasetKey'),
    id: nameSchema,
    key: datasetKeySchema,
    /** The node announcing the key, which must be the dataset's master. */
    by: peerIdSchema,
  }),
])

export type TopologyCommand = z.infer<typeof commandSchema>
export type CommandType = TopologyCommand['type']
export type ReplicaRequest = Extract<TopologyCommand, { type: 'addDataset' }>['replicas'][number]

const envelopeSchema = z.strictObject({ version: z.number(), command: z.unknown() })

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
const utf8Encoder = new TextEncoder()

/** Null when `command` has a valid shape, else a one-line reason. */
export function commandShapeProblem(command: unknown): string | null {
  const parsed = commandSchema.safeParse(command)
  return parsed.success ? null : describeIssues(parsed.error)
}

export function encodeCommand(command: TopologyCommand): Uint8Array {
  const problem = commandShapeProblem(command)
  if (problem !== null)
    throw ClusterError.badArgument(`invalid ${command.type} command: ${problem}`)
  const bytes = utf8Encoder.encode(
    canonicalJson({ version: COMMAND_FORMAT_VERSION, command: commandSchema.parse(command) }),
  )
  // The field bounds are chosen so that any valid command fits (a test builds the largest).
  assert(bytes.length <= COMMAND_BYTES_MAX, 'a valid command fits the command size bound')
  return bytes
}

export function decodeCommand(bytes: Uint8Array): TopologyCommand {
  if (bytes.length > COMMAND_BYTES_MAX)
    throw ClusterError.badMessage(
      `topology command of ${bytes.length} bytes is over ${COMMAND_BYTES_MAX}`,
    )
  let json: unknown
  try {
    json = JSON.parse(strictUtf8.decode(bytes))
  } catch (error) {
    throw ClusterError.badMessage(`topology command is not JSON text: ${(error as Error).message}`)
  }
  const envelope = envelopeSchema.safeParse(json)
  if (!envelope.success)
    throw ClusterError.badMessage(`malformed topology command: ${describeIssues(envelope.error)}`)
  const { version } = envelope.data
  if (version !== COMMAND_FORMAT_VERSION)
    throw ClusterError.badMessage(
      `topology command format ${version} is not supported (this node reads ${COMMAND_FORMAT_VERSION})`,
    )
  const command = commandSchema.safeParse(envelope.data.command)
  if (!command.success)
    throw ClusterError.badMessage(`malformed topology command: ${describeIssues(command.error)}`)
  return command.data
}
